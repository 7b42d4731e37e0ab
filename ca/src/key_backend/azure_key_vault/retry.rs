//! When to try a vault or token request again and how long to wait first. Key Vault throttles
//! with 429 and a `Retry-After` in seconds; a gateway in front of it may send 5xx. Both are
//! retried a bounded number of times so a signing call never hangs for long.

use std::time::Duration;

/// Attempts per request, the first included.
pub const MAX_ATTEMPTS: u32 = 5;
/// The longest esm waits between two attempts, whatever the server asks for.
pub const MAX_DELAY: Duration = Duration::from_secs(20);
/// The first backoff when the server says nothing; doubled on each further attempt.
const BASE_DELAY: Duration = Duration::from_millis(250);

/// Statuses worth another attempt: throttling and the server's own failures.
pub fn is_retryable(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status) && status != 501
}

/// How long to wait before attempt `attempt + 1` (`attempt` counts from 1), or `None` when no
/// attempt is left. `retry_after` is the header's value, if any.
pub fn delay(attempt: u32, retry_after: Option<&str>, now_unix: i64) -> Option<Duration> {
    if attempt >= MAX_ATTEMPTS {
        return None;
    }
    let asked = retry_after.and_then(|v| parse_retry_after(v, now_unix));
    let backoff = BASE_DELAY.saturating_mul(1 << (attempt - 1).min(6));
    Some(asked.unwrap_or(backoff).min(MAX_DELAY))
}

/// `Retry-After` as delta-seconds or as an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(v: &str, now_unix: i64) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(v, &fmt).ok()?.assume_utc();
    let secs = at.unix_timestamp().saturating_sub(now_unix).max(0);
    Some(Duration::from_secs(secs as u64))
}
