//! The bundle service: each policy set with a `bundle_url` polls its server, checks what it
//! gets as a reload would (signature, limits, compile, the bundle's own tests), and writes
//! only a bundle that passes to the set's persisted file. The set's reload task follows that
//! file like any local bundle ([`crate::reload`]), so a new revision is served, audited and
//! counted the same way, and a restart during a server outage enforces the last good one.
//!
//! A bundle refused here is audited once (`policy.changed`, failure, named for the server)
//! and not polled again until its ETag changes; a server that cannot be reached is retried
//! with backoff and counted in `/metrics`, and the old bundle keeps serving.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use esm_audit::writer::AuditSink;
use esm_audit::{kind, Event, Outcome};
use tokio::sync::{watch, Notify};

pub use crate::bundle_download::{next_poll, parse_roots, Fetched, RemoteBundle};
use crate::error::{Error, Result};
use crate::source::{PolicySource, SetSpec};

/// What became of one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// A new bundle passed and was persisted.
    New,
    /// `304`: the bundle held is current.
    NotModified,
    /// The server answered with a bundle that fails its checks (signature, compile,
    /// tests): the publisher's fault.
    Refused,
    /// The server could not be reached or answered an error, or the bundle could not be
    /// written.
    Failed,
}

/// Per policy set, polls by outcome and the Unix time of the last poll that reached the
/// server: a stale time means the set serves an old revision. Process-wide, as
/// [`crate::reload_counts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleCounts {
    pub set: String,
    pub new: u64,
    pub not_modified: u64,
    pub refused: u64,
    pub failed: u64,
    pub last_success_unix: u64,
}

static COUNTS: Mutex<Vec<BundleCounts>> = Mutex::new(Vec::new());

fn count(set: &str, polled: Polled) {
    let mut all = COUNTS.lock().unwrap_or_else(PoisonError::into_inner);
    let i = match all.iter().position(|c| c.set == set) {
        Some(i) => i,
        None => {
            all.push(BundleCounts {
                set: set.to_owned(),
                ..BundleCounts::default()
            });
            all.len() - 1
        }
    };
    let Some(c) = all.get_mut(i) else { return };
    match polled {
        Polled::New => c.new += 1,
        Polled::NotModified => c.not_modified += 1,
        Polled::Refused => c.refused += 1,
        Polled::Failed => c.failed += 1,
    }
    if polled != Polled::Failed {
        c.last_success_unix = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    }
}

/// Every set with a bundle server, since the process started.
pub fn counts() -> Vec<BundleCounts> {
    COUNTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Checks downloaded bundle bytes as a reload would: signature (with the set's
/// `bundle_key`), limits, compile and the bundle's own tests.
pub fn check(spec: &SetSpec, remote: &RemoteBundle, bytes: &[u8]) -> Result<()> {
    let keys = match &spec.source {
        PolicySource::Bundle { keys, .. } => keys.as_deref(),
        PolicySource::Dir(_) => None,
    };
    let b = crate::bundle::read_from(bytes, Path::new(&remote.url_for_log()), keys)?;
    crate::reload::validate_files(spec, b.files, b.manifest.revision).map(drop)
}

/// The outcome of one poll, and the ETag to send on the next.
#[derive(Debug)]
pub struct Poll {
    pub polled: Polled,
    pub etag: Option<String>,
    /// Why the bundle was refused or the poll failed.
    pub error: Option<Error>,
}

/// One poll (blocking): fetch with `etag`, check, persist.
pub fn poll_once(
    spec: &SetSpec,
    remote: &RemoteBundle,
    agent: &ureq::Agent,
    etag: Option<String>,
) -> Poll {
    let fail = |etag, e: Error| Poll {
        polled: Polled::Failed,
        etag,
        error: Some(e),
    };
    let (bytes, new_etag) = match remote.fetch(agent, etag.as_deref()) {
        Ok(Fetched::NotModified) => {
            return Poll {
                polled: Polled::NotModified,
                etag,
                error: None,
            }
        }
        Ok(Fetched::Bundle { bytes, etag }) => (bytes, etag),
        Err(e) => return fail(etag, e),
    };
    if let Err(e) = check(spec, remote, &bytes) {
        // Its ETag is sent from now on, so an unchanged refused bundle costs a 304.
        return Poll {
            polled: Polled::Refused,
            etag: new_etag,
            error: Some(e),
        };
    }
    match remote.persist(&bytes, new_etag.as_deref()) {
        Ok(()) => Poll {
            polled: Polled::New,
            etag: new_etag,
            error: None,
        },
        Err(e) => fail(etag, e),
    }
}

/// The audit record of a bundle the server sent and esm refused.
pub fn refused_event(spec: &SetSpec, remote: &RemoteBundle, error: &Error) -> Event {
    let mut e = Event::new(kind::POLICY_CHANGED, Outcome::Failure);
    e.actor = remote.url_for_log();
    e.subject = remote.persisted.display().to_string();
    e.action = "refuse".into();
    e.reason = error.to_string();
    e.details = serde_json::json!({
        "policy.set": spec.name,
        "policy.rule": spec.rule,
        "changed.via": crate::change_author::BUNDLE_SERVICE,
        "bundle.url": remote.url_for_log(),
    })
    .into();
    e
}

fn unit_random() -> f64 {
    let mut b = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        return 0.5;
    }
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Polls the set's bundle server until `stop` fires: at once, then between the spec's
/// bounds. `persisted` is woken after each new bundle so the set's reload takes it at
/// once. A spec without `remote` (or that loses it on a config reload) is not polled.
pub async fn run(
    mut spec_rx: watch::Receiver<Arc<SetSpec>>,
    persisted: Arc<Notify>,
    audit: Option<AuditSink>,
    mut stop: watch::Receiver<bool>,
) {
    let mut etag: Option<String> = None;
    let mut fresh = true;
    let mut failures = 0u32;
    loop {
        let spec = spec_rx.borrow_and_update().clone();
        let Some(remote) = spec.remote.clone() else {
            tokio::select! {
                r = spec_rx.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
            fresh = true;
            continue;
        };
        if fresh {
            etag = remote.persisted_etag();
            fresh = false;
        }
        let (s, r, e) = (spec.clone(), remote.clone(), etag.clone());
        let Ok(poll) = tokio::task::spawn_blocking(move || poll_once(&s, &r, &r.agent(), e)).await
        else {
            return;
        };
        count(&spec.name, poll.polled);
        etag = poll.etag;
        match (poll.polled, &poll.error) {
            (Polled::New, _) => {
                failures = 0;
                tracing::info!(policy.set = %spec.name, bundle.url = %remote.url_for_log(), "new bundle downloaded");
                persisted.notify_one();
            }
            (Polled::NotModified, _) => failures = 0,
            (Polled::Refused, Some(err)) => {
                failures = 0;
                tracing::error!(policy.set = %spec.name, bundle.url = %remote.url_for_log(), error = %err, "downloaded bundle refused; the last good one keeps serving");
                if let Some(sink) = &audit {
                    if let Err(e) = sink.append(refused_event(&spec, &remote, err)).await {
                        tracing::error!(error = %e, "bundle refusal not recorded");
                    }
                }
            }
            (_, err) => {
                failures = failures.saturating_add(1);
                let err = err.as_ref().map(ToString::to_string).unwrap_or_default();
                tracing::warn!(policy.set = %spec.name, bundle.url = %remote.url_for_log(), error = %err, bundle.failures = failures, "bundle server poll failed; the last good bundle keeps serving");
            }
        }
        let delay = next_poll(remote.poll_min, remote.poll_max, failures, unit_random());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            r = spec_rx.changed() => {
                if r.is_err() { return }
                fresh = true;
            }
            _ = stop.changed() => return,
        }
    }
}

/// For `serve`'s start: a set with a bundle server and nothing persisted yet gets its first
/// bundle now (blocking, bounded by the client's timeouts), so it has a policy to load.
pub fn first_download(spec: &SetSpec) -> Result<()> {
    let Some(remote) = &spec.remote else {
        return Ok(());
    };
    if remote.persisted.exists() {
        return Ok(());
    }
    let poll = poll_once(spec, remote, &remote.agent(), None);
    count(&spec.name, poll.polled);
    match poll.error {
        None => Ok(()),
        Some(e) => Err(Error::BundleServer {
            url: remote.url_for_log(),
            reason: format!(
                "no bundle persisted at {} and none could be downloaded: {e}",
                remote.persisted.display()
            ),
        }),
    }
}

/// How long a fleet's polls spread by default: OPA's 60 and 120 seconds.
pub const DEFAULT_POLL: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(120));

#[cfg(test)]
#[path = "bundle_service_tests.rs"]
mod tests;
