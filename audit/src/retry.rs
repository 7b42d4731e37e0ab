//! When the writer tries a refused batch again, and when it stops trying. A store that
//! refuses writes (a full disk, a database restarting) usually comes back within seconds;
//! the writer keeps the batch and retries with a short, capped backoff so that auditing
//! resumes by itself soon after, without hammering a store that is down.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// The first retry's delay; each next one doubles, up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(50);
/// The longest wait between attempts: the store is seen back within this long.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// After a stop is asked for, how long a refused batch is still retried before it is given
/// up: a shutdown must end even with the disk still full.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The delay before attempt `attempt + 1`, after `attempt` failures (1-based).
pub fn retry_delay(attempt: u32) -> Duration {
    let doubled = FIRST_DELAY.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    doubled.min(MAX_DELAY)
}

/// Whether to try again, and after how long: `None` gives the batch up. `failing_for` is
/// the time since the batch first failed, `stopping_for` the time since a stop was asked.
pub fn decide(
    attempt: u32,
    failing_for: Duration,
    retry_for: Option<Duration>,
    stopping_for: Option<Duration>,
) -> Option<Duration> {
    if retry_for.is_some_and(|limit| failing_for >= limit) {
        return None;
    }
    if stopping_for.is_some_and(|s| s >= SHUTDOWN_GRACE) {
        return None;
    }
    Some(retry_delay(attempt))
}

/// The retry state of one batch.
pub struct Retry {
    attempts: u32,
    started: Instant,
    retry_for: Option<Duration>,
    stop_seen: Option<Instant>,
}

impl Retry {
    pub fn new(retry_for: Option<Duration>) -> Self {
        Self {
            attempts: 0,
            started: Instant::now(),
            retry_for,
            stop_seen: None,
        }
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Counts a failed attempt; the delay before the next one, or `None` to give up.
    pub fn next(&mut self, stopping: bool) -> Option<Duration> {
        self.attempts += 1;
        if stopping && self.stop_seen.is_none() {
            self.stop_seen = Some(Instant::now());
        }
        decide(
            self.attempts,
            self.started.elapsed(),
            self.retry_for,
            self.stop_seen.map(|t| t.elapsed()),
        )
    }
}

/// The writer's stop signal, remembered once seen (a dropped handle counts as a stop).
pub struct Stop {
    rx: oneshot::Receiver<()>,
    asked: bool,
}

impl Stop {
    pub fn new(rx: oneshot::Receiver<()>) -> Self {
        Self { rx, asked: false }
    }

    pub fn asked(&self) -> bool {
        self.asked
    }

    /// Resolves when the stop is asked for; never again once it was.
    pub async fn wait(&mut self) {
        if self.asked {
            std::future::pending::<()>().await;
        }
        let _ = (&mut self.rx).await;
        self.asked = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_50ms_and_caps_at_one_second() {
        let d: Vec<u64> = (1..=7).map(|a| retry_delay(a).as_millis() as u64).collect();
        assert_eq!(d, [50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(retry_delay(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn server_retries_a_refused_batch_without_end() {
        let hour = Duration::from_secs(3600);
        assert_eq!(decide(10_000, hour, None, None), Some(MAX_DELAY));
    }

    #[test]
    fn bounded_retry_gives_up_after_its_limit() {
        let limit = Some(Duration::from_secs(10));
        assert!(decide(3, Duration::from_secs(9), limit, None).is_some());
        assert_eq!(decide(4, Duration::from_secs(10), limit, None), None);
    }

    #[test]
    fn shutdown_retries_for_the_grace_period_then_gives_up() {
        let t = Duration::from_secs(1);
        assert!(decide(2, t, None, Some(Duration::ZERO)).is_some());
        assert!(decide(3, t, None, Some(SHUTDOWN_GRACE / 2)).is_some());
        assert_eq!(decide(9, t, None, Some(SHUTDOWN_GRACE)), None);
    }
}
