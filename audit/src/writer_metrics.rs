//! What the audit writer counts for `/metrics`: plain atomics and a histogram handle that
//! the binary reads at scrape time. A growing `dropped` or `failed_batches` is lost or
//! late evidence; the queue depth and the commit latency say how close it is.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::OnceLock;

use esm_histogram::{Histogram, COMMIT};
use tokio::sync::mpsc;

use crate::sink::Job;

/// Counters for `/metrics`.
#[derive(Debug)]
pub struct Metrics {
    pub appended: AtomicU64,
    pub dropped: AtomicU64,
    pub batches: AtomicU64,
    pub failed_batches: AtomicU64,
    pub checkpoints: AtomicU64,
    pub last_seq: AtomicU64,
    /// Set while the store refuses the writer's batches (disk full, database gone): the
    /// server is not ready, since nothing it decides can be recorded.
    pub store_failing: AtomicBool,
    /// Batches the store refused and the writer wrote later (each retry of one batch
    /// counts in `failed_batches`).
    pub retried_batches: AtomicU64,
    /// Events given up after `retry_for` (or at shutdown with the store still refusing).
    pub abandoned: AtomicU64,
    /// Checkpoints the key could not sign (its HSM or vault failed); the events were stored.
    pub checkpoint_failures: AtomicU64,
    /// One transaction that the store took: begin, catch up, insert, checkpoint, commit.
    /// Refused attempts are not in it (they are `failed_batches`).
    pub commit_latency: Histogram,
    /// When the newest signed checkpoint in the store was made (Unix ns; 0 when there is
    /// none): events after it are chained but not yet signed.
    pub last_checkpoint_ns: AtomicI64,
    /// The writer's queue, held weakly: looking at its depth must not keep it open at
    /// shutdown.
    queue: OnceLock<Queue>,
}

struct Queue(mpsc::WeakSender<Job>);

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queue")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            appended: AtomicU64::default(),
            dropped: AtomicU64::default(),
            batches: AtomicU64::default(),
            failed_batches: AtomicU64::default(),
            checkpoints: AtomicU64::default(),
            last_seq: AtomicU64::default(),
            store_failing: AtomicBool::default(),
            retried_batches: AtomicU64::default(),
            abandoned: AtomicU64::default(),
            checkpoint_failures: AtomicU64::default(),
            commit_latency: Histogram::new(COMMIT),
            last_checkpoint_ns: AtomicI64::default(),
            queue: OnceLock::new(),
        }
    }
}

impl Metrics {
    pub(crate) fn watch_queue(&self, tx: &mpsc::Sender<Job>) {
        let _ = self.queue.set(Queue(tx.downgrade()));
    }

    /// Events queued for the writer and not yet taken, and the queue's capacity; `None`
    /// before the writer starts and after it has stopped.
    pub fn queue_depth(&self) -> Option<(usize, usize)> {
        let tx = self.queue.get()?.0.upgrade()?;
        Some((tx.max_capacity() - tx.capacity(), tx.max_capacity()))
    }
}
