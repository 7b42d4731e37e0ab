//! Latency histograms the libraries record into and the binary exposes.
//!
//! The ext_authz decision path takes 0.15 µs when its memo answers, so recording a latency
//! there must cost a few atomic adds, not a lock: [`Histogram::observe`] finds the bucket
//! by a binary search over a handful of fixed bounds and does two relaxed `fetch_add`s.
//! The libraries hold only these plain handles; the binary reads [`Histogram::snapshot`]
//! at scrape time and writes it out with a Prometheus client, so no library depends on
//! an exposition format.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Bucket upper bounds, in nanoseconds, ascending. An observation equal to a bound falls in
/// that bound's bucket (Prometheus' `le`).
pub type Bounds = &'static [u64];

const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

/// One ext_authz decision: 0.15 µs from the memo, a few µs evaluated, up to an fsync or
/// two in `sync` decision-log mode.
pub const DECISION: Bounds = &[
    US,
    2 * US + US / 2,
    5 * US,
    10 * US,
    25 * US,
    50 * US,
    100 * US,
    250 * US,
    500 * US,
    MS,
    2 * MS + MS / 2,
    5 * MS,
    10 * MS,
    25 * MS,
    50 * MS,
    100 * MS,
    250 * MS,
];

/// One audit transaction: an fsync on SQLite, a round trip and a commit on PostgreSQL;
/// seconds when the store struggles.
pub const COMMIT: Bounds = &[
    100 * US,
    250 * US,
    500 * US,
    MS,
    2 * MS + MS / 2,
    5 * MS,
    10 * MS,
    25 * MS,
    50 * MS,
    100 * MS,
    250 * MS,
    500 * MS,
    S,
    2 * S + S / 2,
    5 * S,
    10 * S,
];

/// From a CA change to the SDS response that carries it: an issuance (a key backend's
/// signature, milliseconds on a local key, more on an HSM or a vault) and a send.
pub const PUSH: Bounds = &[
    MS,
    2 * MS + MS / 2,
    5 * MS,
    10 * MS,
    25 * MS,
    50 * MS,
    100 * MS,
    250 * MS,
    500 * MS,
    S,
    2 * S + S / 2,
    5 * S,
    10 * S,
    30 * S,
    60 * S,
];

/// A fixed-bucket histogram of durations, updated without locks from any thread.
#[derive(Debug)]
pub struct Histogram {
    bounds: Bounds,
    /// One count per bound, then the overflow (`+Inf`) bucket; not cumulative.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// (upper bound in seconds, observations in this bucket alone), the last bound `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending, as the constants above are).
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration in nanoseconds: two relaxed atomic adds.
    #[inline]
    pub fn observe_nanos(&self, nanos: u64) {
        let i = self.bounds.partition_point(|&b| b < nanos);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Records one duration (saturating at about 584 years).
    #[inline]
    pub fn observe(&self, d: Duration) {
        self.observe_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The counts now. Read bucket by bucket while others record: the count and the sum
    /// may be one observation apart, which a scrape every few seconds does not notice.
    pub fn snapshot(&self) -> Snapshot {
        let bounds = self
            .bounds
            .iter()
            .map(|&b| b as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds
            .zip(self.buckets.iter().map(|b| b.load(Relaxed)))
            .collect();
        Snapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum_seconds: self.sum_nanos.load(Relaxed) as f64 / 1e9,
            buckets,
        }
    }
}

impl Default for Histogram {
    /// A decision-latency histogram: what a `Default` metrics struct most often holds.
    fn default() -> Self {
        Self::new(DECISION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_on_a_bound_counts_in_that_bounds_bucket() {
        let h = Histogram::new(&[10, 20]);
        h.observe_nanos(10);
        h.observe_nanos(11);
        h.observe_nanos(20);
        h.observe_nanos(21);
        let s = h.snapshot();
        let counts: Vec<u64> = s.buckets.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, vec![1, 2, 1]);
        assert_eq!(s.count, 4);
        assert!((s.sum_seconds - 62e-9).abs() < 1e-15);
    }

    #[test]
    fn the_last_bucket_is_unbounded_and_takes_the_longest_durations() {
        let h = Histogram::new(DECISION);
        h.observe(Duration::from_secs(3600));
        h.observe(Duration::MAX);
        let s = h.snapshot();
        let last = s.buckets.last().copied();
        assert_eq!(last, Some((f64::INFINITY, 2)));
        assert_eq!(s.buckets.len(), DECISION.len() + 1);
    }

    #[test]
    fn bounds_are_reported_in_seconds_in_ascending_order() {
        let s = Histogram::new(COMMIT).snapshot();
        assert_eq!(s.buckets.first().map(|b| b.0), Some(1e-4));
        assert!(s.buckets.windows(2).all(|w| w[0].0 < w[1].0));
        for bounds in [DECISION, COMMIT, PUSH] {
            assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let h = std::sync::Arc::new(Histogram::new(DECISION));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        h.observe_nanos(i * 1_000 + t);
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        assert_eq!(h.snapshot().count, 40_000);
    }
}
