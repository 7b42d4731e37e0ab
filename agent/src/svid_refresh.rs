//! When a shared SVID is issued again: a pure schedule over what is held and `now`, tested
//! without I/O; [`super::svid_cache`] runs it.
//!
//! Like SPIRE's agent, an SVID is renewed at half of its lifetime, so a workload always holds
//! a certificate with time left even if the CA is briefly unreachable. It is also renewed
//! when the signing CA changes, so nothing keeps chaining to a retired intermediate. A failed
//! issuance (a key backend that does not answer, an expired signing CA) is retried after a
//! growing pause, and at once when the CA publishes new material.

use time::{Duration, OffsetDateTime};

/// The first retry after a failed issuance comes this long after it; each further failure
/// doubles the pause, up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::seconds(1);
pub const MAX_RETRY: Duration = Duration::seconds(30);

/// When an SVID valid from `not_before` to `not_after` should be replaced.
pub fn refresh_at(not_before: OffsetDateTime, not_after: OffsetDateTime) -> OffsetDateTime {
    not_before + (not_after - not_before) / 2
}

/// The SVID held now, as far as the schedule cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// When it was issued; `not_before` is back-dated for clock skew, so the refresh time
    /// counts from here.
    pub issued_at: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The signing CA it was issued under.
    pub signer: String,
}

impl Held {
    /// True while it can still be handed out.
    pub fn valid_at(&self, now: OffsetDateTime) -> bool {
        now < self.not_after
    }
}

/// The failures since the last issuance that worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failing {
    pub last_at: OffsetDateTime,
    pub count: u32,
}

/// The pause after `count` failures in a row.
pub fn retry_after(count: u32) -> Duration {
    let doublings = count.saturating_sub(1).min(16);
    (FIRST_RETRY * (1i32 << doublings)).min(MAX_RETRY)
}

/// What the holder of one SVID does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Issue now.
    Issue,
    /// Nothing until then (or until the CA changes).
    Wait(OffsetDateTime),
}

/// The next step for an SVID `held` (if any) while the CA signs as `signer`, after the
/// failures in `failing` (if any), at `now`.
pub fn next_refresh(
    held: Option<&Held>,
    failing: Option<&Failing>,
    signer: &str,
    now: OffsetDateTime,
) -> Next {
    if let Some(f) = failing {
        let at = f.last_at + retry_after(f.count);
        return if now >= at {
            Next::Issue
        } else {
            Next::Wait(at)
        };
    }
    let Some(h) = held else { return Next::Issue };
    if h.signer != signer {
        return Next::Issue;
    }
    let due = refresh_at(h.issued_at, h.not_after);
    if now >= due {
        Next::Issue
    } else {
        Next::Wait(due)
    }
}

/// Why the SVID `held` was replaced by one signed by `signer` at `now`, for its
/// `svid.rotated` record: `ca_changed` (another signing CA), `expired` (issuance failed
/// until it ran out: the holders went without), `retry` (renewed late, after failures, but
/// in time), or `half_life` (on schedule).
pub fn rotation_reason(
    held: &Held,
    after_failures: bool,
    signer: &str,
    now: OffsetDateTime,
) -> &'static str {
    if !held.valid_at(now) {
        "expired"
    } else if held.signer != signer {
        "ca_changed"
    } else if after_failures {
        "retry"
    } else {
        "half_life"
    }
}

#[cfg(test)]
#[path = "svid_refresh_tests.rs"]
mod tests;
