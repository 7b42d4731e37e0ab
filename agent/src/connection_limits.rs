//! How many connections the agent socket holds, and for how long a client may leave one
//! half-spoken. Every connection costs a relay task, its buffers and an h2 connection; a
//! local process that opens them without end would otherwise exhaust memory or file
//! descriptors and take the agent away from every workload on the node.
//!
//! Slots are counted per peer uid as well as in total, because a connection that has
//! spoken its preface and then waits is exactly what an idle Envoy or SPIFFE client looks
//! like: no timeout can tell a hoarder from a workload. What a uid hoards it takes only
//! from itself (processes of one uid can already signal and trace each other), while other
//! uids keep the rest of the socket.

use esm_listener::Peer;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The limits of one agent socket; [`Limits::default`] is what `esm serve` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once. 1024 is the usual soft limit on open files, and far over
    /// what a node's workloads hold (one or two each: an Envoy's SDS connection, a SPIFFE
    /// library's Workload API connection). A connection's relay holds at most about
    /// 250 KiB (see `unix`), so even 1024 clients all sending at once stay near 250 MiB.
    pub max_connections: usize,
    /// Connections held at once by one peer uid. A quarter of the total: Kubernetes runs at
    /// most 110 pods per node by default and sidecars often share one uid, so 256 leaves
    /// them room while any one uid leaves three quarters of the socket to the others.
    pub max_connections_per_uid: usize,
    /// How long a client may owe bytes: the preface and its first frame from the moment it
    /// connects, and the rest of any frame or header block it has begun. A local client
    /// writes each of these at once; one that has not finished after 10 s is stuck or
    /// holding a slot on purpose, and is closed. Between frames a client may stay silent.
    pub stall: Duration,
    /// Streams held at once by one peer uid, over all its connections (see
    /// `stream_limits`). An Envoy holds a few SDS streams, a SPIFFE library one or two
    /// Workload API streams; 110 sidecars sharing a uid stay under 1024 at 9 each, while
    /// the budget's buffered answers stay near 12 MiB.
    pub max_streams_per_uid: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_uid: 256,
            stall: Duration::from_secs(10),
            max_streams_per_uid: 1024,
        }
    }
}

/// Connections held, in total and by peer uid: counted as on esm's other listeners.
pub use esm_listener::{Full, Slots};

/// One connection's slot, given back when it is dropped (when the connection ends).
pub struct Slot {
    slots: Arc<Mutex<Slots>>,
    uid: Option<u32>,
}

/// Connections whose peer the kernel did not name share one count.
fn peer(uid: Option<u32>) -> Peer {
    uid.map_or(Peer::Unknown, Peer::Uid)
}

impl Slot {
    pub fn take(
        slots: &Arc<Mutex<Slots>>,
        uid: Option<u32>,
        limits: &Limits,
    ) -> Result<Self, Full> {
        lock(slots).take(
            peer(uid),
            limits.max_connections,
            limits.max_connections_per_uid,
        )?;
        Ok(Self {
            slots: slots.clone(),
            uid,
        })
    }

    /// The peer uid the slot is counted against.
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.slots).give_back(peer(self.uid));
    }
}

/// The counts stay right even if a holder panicked: every change is one step. (The
/// stream budget's counts too.)
pub(crate) fn lock(slots: &Mutex<Slots>) -> std::sync::MutexGuard<'_, Slots> {
    slots.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn limits(total: usize, per_uid: usize) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_uid: per_uid,
            ..Limits::default()
        }
    }

    #[test]
    fn the_socket_limit_holds_across_uids_and_slots_come_back_on_drop() {
        let l = limits(2, 2);
        let slots = Arc::new(Mutex::new(Slots::default()));
        let a = Slot::take(&slots, Some(1), &l).unwrap();
        let b = Slot::take(&slots, Some(2), &l).unwrap();
        assert!(matches!(
            Slot::take(&slots, Some(3), &l),
            Err(Full::Listener)
        ));
        drop(a);
        let c = Slot::take(&slots, Some(3), &l).unwrap();
        drop((b, c));
        assert_eq!(lock(&slots).total(), 0);
        assert!((1..=3).all(|uid| lock(&slots).held_by(peer(Some(uid))) == 0));
    }
}
