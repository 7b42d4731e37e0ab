//! The writer's checkpoint signing. With the key in an HSM or a vault, signing can fail or
//! be slow while the store is fine: the events are then committed without a checkpoint (the
//! hash chain still links them, and the next checkpoint covers them all), the failure is
//! counted and logged, and signing is tried again after a growing pause rather than on every
//! batch — a vault that is down must not turn every commit into a wait.

use std::sync::atomic::Ordering;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use crate::checkpoint::{Checkpoint, SigningKey};
use crate::merkle::Hash;
use crate::writer::Metrics;

/// The longest the writer waits for one signature. The write transaction is open meanwhile,
/// so a backend that answers later (or never) costs one skipped checkpoint, not a stalled log.
pub const SIGN_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause before the next try after `failures` failures in a row: 1 s, doubling, at
/// most `cap` (the checkpoint interval).
pub fn retry_delay(failures: u32, cap: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    Duration::from_secs(1u64 << exp).min(cap.max(Duration::from_secs(1)))
}

pub(crate) struct Checkpointer {
    key: SigningKey,
    cap: Duration,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Checkpointer {
    /// The id of the key checkpoints are signed with.
    pub(crate) fn key_id(&self) -> &str {
        self.key.id()
    }

    pub(crate) fn new(key: SigningKey, cap: Duration) -> Self {
        Self {
            key,
            cap,
            failures: 0,
            retry_at: None,
        }
    }

    /// Whether a due checkpoint should be signed now: always when `forced` (shutdown),
    /// otherwise not before the pause after a failure is over.
    pub(crate) fn ready(&self, forced: bool) -> bool {
        forced || self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// `at`, or the end of the pause after a failure if that is later: when the writer's
    /// timer next signs.
    pub(crate) fn not_before(&self, at: Instant) -> Instant {
        self.retry_at.map_or(at, |t| t.max(at))
    }

    /// The checkpoint over `tree_size` events, or `None` when the key's backend failed.
    pub(crate) async fn sign(
        &mut self,
        tree_size: u64,
        root: Hash,
        last_hash: Hash,
        metrics: &Metrics,
    ) -> Option<Checkpoint> {
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
        let signing = self.key.sign_checkpoint(tree_size, root, last_hash, now);
        let error = match tokio::time::timeout(SIGN_TIMEOUT, signing).await {
            Ok(Ok(cp)) => {
                if self.failures > 0 {
                    tracing::info!(
                        audit.tree_size = tree_size,
                        "audit checkpoints are signed again"
                    );
                }
                self.failures = 0;
                self.retry_at = None;
                return Some(cp);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no signature within {} s", SIGN_TIMEOUT.as_secs()),
        };
        self.failures = self.failures.saturating_add(1);
        let delay = retry_delay(self.failures, self.cap);
        self.retry_at = Some(Instant::now() + delay);
        metrics.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            error = %error,
            audit.key_id = self.key.id(),
            audit.tree_size = tree_size,
            audit.retry_in_ms = delay.as_millis() as u64,
            "audit checkpoint could not be signed; the events are stored, the next checkpoint will cover them"
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_retries_back_off_to_the_checkpoint_interval() {
        let cap = Duration::from_secs(60);
        let delays: Vec<u64> = (1..=9).map(|n| retry_delay(n, cap).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_delay(u32::MAX, cap), cap);
        // A sub-second interval still waits a second between tries.
        assert_eq!(
            retry_delay(3, Duration::from_millis(100)),
            Duration::from_secs(1)
        );
    }
}
