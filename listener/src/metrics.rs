//! What a listener's limits did, for `/metrics`: connections held, and those refused or
//! closed for stalling, so that an operator sees a hoarding neighbour instead of guessing.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::limits::Full;

#[derive(Debug, Default)]
pub struct Metrics {
    open: AtomicU64,
    accepted: AtomicU64,
    refused_listener_full: AtomicU64,
    refused_peer_full: AtomicU64,
    stalled: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub open: u64,
    pub accepted: u64,
    pub refused_listener_full: u64,
    pub refused_peer_full: u64,
    pub stalled: u64,
}

impl Metrics {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            open: self.open.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            refused_listener_full: self.refused_listener_full.load(Relaxed),
            refused_peer_full: self.refused_peer_full.load(Relaxed),
            stalled: self.stalled.load(Relaxed),
        }
    }

    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Relaxed);
        self.open.fetch_add(1, Relaxed);
    }

    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    /// Counts a refusal; true when it is the first of its kind, or the first for a while,
    /// so that a flood of refusals is logged without flooding the log.
    pub(crate) fn refused(&self, why: Full) -> bool {
        let n = match why {
            Full::Listener => self.refused_listener_full.fetch_add(1, Relaxed),
            Full::Peer => self.refused_peer_full.fetch_add(1, Relaxed),
        };
        n.is_power_of_two() || n == 0
    }

    pub(crate) fn stalled(&self) {
        self.stalled.fetch_add(1, Relaxed);
    }
}

/// Every live listener's counters, by name, for `/metrics`: the listeners are made where
/// the servers start and the exposition is elsewhere, so they meet here instead of being
/// passed through every layer between.
static REGISTRY: std::sync::Mutex<Vec<(&'static str, std::sync::Weak<Metrics>)>> =
    std::sync::Mutex::new(Vec::new());

/// Counters for a new listener named `name`, listed by [`snapshots`] while it lives.
pub(crate) fn register(name: &'static str) -> std::sync::Arc<Metrics> {
    let metrics = std::sync::Arc::new(Metrics::default());
    let mut all = REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    all.retain(|(_, m)| m.strong_count() > 0);
    all.push((name, std::sync::Arc::downgrade(&metrics)));
    metrics
}

/// The counters of every live listener, summed by name.
pub fn snapshots() -> Vec<(&'static str, Snapshot)> {
    let all = REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out: Vec<(&'static str, Snapshot)> = Vec::new();
    for (name, m) in all.iter() {
        let Some(m) = m.upgrade() else { continue };
        let s = m.snapshot();
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, sum)) => {
                sum.open += s.open;
                sum.accepted += s.accepted;
                sum.refused_listener_full += s.refused_listener_full;
                sum.refused_peer_full += s.refused_peer_full;
                sum.stalled += s.stalled;
            }
            None => out.push((name, s)),
        }
    }
    out
}
