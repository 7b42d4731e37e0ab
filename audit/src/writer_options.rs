//! What the writer is told: queue size and what a full queue does, batching, checkpoint
//! cadence, priority and how long a refused batch is retried.

use std::time::Duration;

/// What producers get when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Wait for room; a producer that cannot wait fails closed (Vault's audit devices).
    Block,
    /// Drop the event, count it, and write one `audit.gap` record with the count.
    Drop,
}

#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub queue_capacity: usize,
    pub max_batch: usize,
    pub on_full: OnFull,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    /// After the first event of a small batch arrives, wait up to this long for more before
    /// committing: under a steady stream of decisions this turns thousands of small
    /// transactions (and fsyncs) per second into a few dozen larger ones. Only events
    /// nobody waits for linger ([`crate::sink::AuditSink::try_append`], the request path's decisions):
    /// an [`crate::sink::AuditSink::append`]ed event is committed at once, with whatever has queued.
    pub linger: Duration,
    /// This node's id, for events whose producer left `node` empty.
    pub node: String,
    /// The writer thread's nice value (0: the same priority as the request path); see
    /// [`crate::background`].
    pub nice: i32,
    /// How long a batch the store refuses is retried before its events are given up
    /// (their waiters get the error; events nobody waits for are counted into a gap
    /// record). `None`, the server's choice: retry until the store takes it, while the
    /// full queue refuses new events (fail closed). A one-shot CLI command sets a bound so
    /// that it reports the error instead of waiting for a disk to be freed.
    pub retry_for: Option<Duration>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            max_batch: 8_192,
            on_full: OnFull::Block,
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            linger: Duration::from_millis(20),
            node: String::new(),
            nice: 10,
            retry_for: None,
        }
    }
}
