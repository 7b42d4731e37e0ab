//! One SVID per identity, not per stream. Every SDS stream, Workload API stream and unary
//! fetch that wants the SVID of the same identity (SPIFFE ID with the TTL and DNS names its
//! entry gives) holds the same one; the certificates of esm's own mTLS listeners are held
//! here too.
//!
//! Each identity held has one task: it issues when the schedule says so
//! ([`super::svid_refresh::next_refresh`]: at half of the SVID's life, when the signing CA
//! changes, and after a failure on a growing pause), and publishes the current value on a
//! `watch` channel its holders follow. Issuing (key generation and signing, which may wait
//! on an HSM or a vault) runs off the async workers.
//!
//! A failure to issue is not the workload's: holders keep the SVID they have while it is
//! valid, or wait, and get one when the CA can sign again. Only a refusal on principle (an
//! entry for a reserved identity, another trust domain) is passed on as the caller's.
//!
//! When the last holder goes, a valid SVID is kept until it would be renewed (so repeated
//! unary fetches get the same one), then dropped with its task.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use esm_audit::writer::AuditSink;
use esm_ca::audit_events::Replaced;
use esm_ca::issuer::{IssuancePolicy, IssuedSvid, LeafKey, OwnIdentity, SvidRequest};
use esm_ca::material::CaMaterial;
use esm_identity::SpiffeId;
use time::{Duration, OffsetDateTime};
use tokio::sync::watch;

use super::context::AgentMetrics;
use super::entry::Entry;
use super::svid_refresh::{next_refresh, rotation_reason, Failing, Held, Next};

/// What one shared SVID is: an identity and what its registration entry says about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SvidSpec {
    Workload {
        spiffe_id: SpiffeId,
        ttl_secs: Option<u64>,
        dns_names: Vec<String>,
    },
    /// One of esm's own listeners (`spiffe://<td>/esm/agent`, `spiffe://<td>/esm/authz`).
    Own(OwnIdentity),
}

impl SvidSpec {
    /// The SVID of `id` as `entry` (the caller's first entry granting it) describes it.
    pub fn for_entry(id: &SpiffeId, entry: Option<&Entry>) -> Self {
        Self::Workload {
            spiffe_id: id.clone(),
            ttl_secs: entry.and_then(|e| e.ttl_secs),
            dns_names: entry.map(|e| e.dns_names.clone()).unwrap_or_default(),
        }
    }

    fn label(&self) -> &str {
        match self {
            Self::Workload { spiffe_id, .. } => spiffe_id.as_str(),
            Self::Own(OwnIdentity::Agent) => "esm agent listener",
            Self::Own(OwnIdentity::Authz) => "esm ext_authz listener",
            Self::Own(_) => "esm listener",
        }
    }
}

/// The current state of one shared SVID.
#[derive(Clone)]
pub enum Current {
    /// Its first issuance is under way.
    Pending,
    /// The SVID to hand out.
    Ready(Arc<IssuedSvid>),
    /// The CA refuses this identity on principle (reserved, another trust domain, a TTL it
    /// does not grant): the entry is at fault, and asking again will not help.
    Refused(String),
    /// The CA cannot issue now and nothing valid is held; retried.
    Unavailable(String),
}

/// Who made the agent start holding an SVID: the actor and transport named in its
/// `svid.issued` events for as long as it is held.
#[derive(Debug, Clone)]
pub struct Opener {
    pub actor: String,
    pub via: &'static str,
}

type Slot = Arc<watch::Sender<Current>>;

pub struct SvidCache {
    slots: Mutex<HashMap<SvidSpec, Slot>>,
    ca: watch::Receiver<Arc<CaMaterial>>,
    policy: IssuancePolicy,
    audit: Option<AuditSink>,
    metrics: Arc<AgentMetrics>,
}

/// True for a refusal no retry will change: the caller's entry asks for what the CA will
/// never issue. Everything else (a key backend failing, an expired signing CA) is the CA's.
fn refused_on_principle(e: &esm_ca::Error) -> bool {
    e.is_usage_error() || matches!(e, esm_ca::Error::Reserved(_))
}

impl SvidCache {
    pub fn new(
        ca: watch::Receiver<Arc<CaMaterial>>,
        policy: IssuancePolicy,
        audit: Option<AuditSink>,
        metrics: Arc<AgentMetrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            slots: Mutex::default(),
            ca,
            policy,
            audit,
            metrics,
        })
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<SvidSpec, Slot>> {
        // A holder task that panicked leaves the map as it was: still consistent.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The identities held now.
    pub fn len(&self) -> usize {
        self.slots().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Follows the SVID `spec`, starting to hold it (for `opener`) if nobody does.
    pub fn subscribe(
        self: &Arc<Self>,
        spec: &SvidSpec,
        opener: &Opener,
    ) -> watch::Receiver<Current> {
        let mut slots = self.slots();
        if let Some(slot) = slots.get(spec) {
            return slot.subscribe();
        }
        let (tx, rx) = watch::channel(Current::Pending);
        let tx = Arc::new(tx);
        slots.insert(spec.clone(), tx.clone());
        tokio::spawn(self.clone().hold(spec.clone(), tx, opener.clone()));
        rx
    }

    /// Stops holding `spec` when nobody follows it any more; true when stopped.
    fn release_if_unheld(&self, spec: &SvidSpec, tx: &Slot) -> bool {
        let mut slots = self.slots();
        if tx.receiver_count() > 0 {
            return false;
        }
        if slots.get(spec).is_some_and(|s| Arc::ptr_eq(s, tx)) {
            slots.remove(spec);
        }
        true
    }

    /// Issues `spec` under `ca`, off the async workers.
    async fn issue(
        &self,
        ca: Arc<CaMaterial>,
        spec: &SvidSpec,
    ) -> Result<(IssuedSvid, OffsetDateTime), esm_ca::Error> {
        let (policy, spec) = (self.policy, spec.clone());
        tokio::task::spawn_blocking(move || {
            let now = OffsetDateTime::now_utc();
            let svid = match &spec {
                SvidSpec::Workload {
                    spiffe_id,
                    ttl_secs,
                    dns_names,
                } => {
                    let ttl = ttl_secs.map(|s| Duration::seconds(s.min(i64::MAX as u64) as i64));
                    let req = SvidRequest {
                        spiffe_id,
                        ttl,
                        dns_names,
                        key: LeafKey::Generate,
                    };
                    ca.issue(&policy, req, now)
                }
                SvidSpec::Own(who) => ca.issue_own_svid(&policy, *who, now),
            }?;
            Ok((svid, now))
        })
        .await
        .map_err(|e| esm_ca::Error::Bug(format!("SVID issuance task: {e}")))?
    }

    /// Records a workload SVID issued (the listener's own is not a workload's): the first
    /// of a holder as `svid.issued`, each re-issue as `svid.rotated` naming the one it
    /// replaces (`replaced`, with `reason`).
    fn record(
        &self,
        spec: &SvidSpec,
        svid: &IssuedSvid,
        opener: &Opener,
        replaced: Option<(&Replaced, &'static str)>,
        now: OffsetDateTime,
    ) {
        if matches!(spec, SvidSpec::Own(_)) {
            return;
        }
        self.metrics.svids_issued.fetch_add(1, Ordering::Relaxed);
        match replaced {
            Some((r, reason)) => {
                tracing::info!(spiffe.id = %svid.spiffe_id, serial = %svid.serial_hex, previous.serial = %r.serial_hex, rotation.reason = reason, caller = %opener.actor, via = opener.via, "SVID rotated");
            }
            None => {
                tracing::info!(spiffe.id = %svid.spiffe_id, serial = %svid.serial_hex, caller = %opener.actor, via = opener.via, "SVID issued");
            }
        }
        if let Some(sink) = &self.audit {
            let e = match replaced {
                Some((r, reason)) => esm_ca::audit_events::svid_rotated(
                    svid,
                    r,
                    reason,
                    &opener.actor,
                    opener.via,
                    now,
                ),
                None => esm_ca::audit_events::svid_issued(svid, &opener.actor, opener.via, now),
            };
            if let Err(err) = sink.try_append(e) {
                tracing::warn!(error = %err, "SVID issuance not recorded");
            }
        }
    }

    /// Holds one SVID while anyone follows it (see the module's doc).
    async fn hold(self: Arc<Self>, spec: SvidSpec, tx: Slot, opener: Opener) {
        let mut ca = self.ca.clone();
        let mut held: Option<Held> = None;
        // The SVID last issued by this holder, whatever its validity: the next issuance
        // replaces it (`svid.rotated`).
        let mut replaced: Option<Replaced> = None;
        let mut failing: Option<Failing> = None;
        let mut refused = false;
        loop {
            let now = OffsetDateTime::now_utc();
            let material = ca.borrow_and_update().clone();
            let valid = held.as_ref().is_some_and(|h| h.valid_at(now));
            // A refusal waits for new material only; anything else follows the schedule.
            let next = (!refused)
                .then(|| next_refresh(held.as_ref(), failing.as_ref(), &material.signing.id, now));
            if next != Some(Next::Issue) {
                let due = async {
                    match next {
                        Some(Next::Wait(at)) => {
                            let left = std::time::Duration::try_from(at - now).unwrap_or_default();
                            tokio::time::sleep(left).await;
                        }
                        _ => std::future::pending().await,
                    }
                };
                // Nothing valid held: no reason to stay once the last holder has gone.
                let gone = async {
                    if valid {
                        std::future::pending().await
                    } else {
                        tx.closed().await
                    }
                };
                tokio::select! {
                    () = due => {}
                    () = gone => {}
                    r = ca.changed() => {
                        if r.is_err() {
                            return;
                        }
                        // New material: the CA may sign again; try at once.
                        failing = None;
                        refused = false;
                    }
                }
                if self.release_if_unheld(&spec, &tx) {
                    return;
                }
                continue;
            }
            if self.release_if_unheld(&spec, &tx) {
                return;
            }
            match self.issue(material.clone(), &spec).await {
                Ok((svid, at)) => {
                    let previous = replaced.as_ref().map(|r| {
                        let was = Held {
                            issued_at: at,
                            not_after: r.not_after,
                            signer: r.signed_by.clone(),
                        };
                        (
                            r,
                            rotation_reason(&was, failing.is_some(), &svid.signed_by, at),
                        )
                    });
                    self.record(&spec, &svid, &opener, previous, at);
                    replaced = Some(Replaced {
                        serial_hex: svid.serial_hex.clone(),
                        not_after: svid.not_after,
                        signed_by: svid.signed_by.clone(),
                    });
                    if failing.take().is_some() {
                        tracing::info!(spiffe.id = spec.label(), "SVID issuance works again");
                    }
                    held = Some(Held {
                        issued_at: at,
                        not_after: svid.not_after,
                        signer: svid.signed_by.clone(),
                    });
                    tx.send_replace(Current::Ready(Arc::new(svid)));
                }
                Err(e) if refused_on_principle(&e) => {
                    tracing::warn!(spiffe.id = spec.label(), error = %e, "SVID refused by the CA");
                    refused = true;
                    held = None;
                    replaced = None;
                    tx.send_replace(Current::Refused(e.to_string()));
                }
                Err(e) => {
                    let count = failing.map_or(1, |f| f.count.saturating_add(1));
                    self.metrics
                        .issuance_failures
                        .fetch_add(1, Ordering::Relaxed);
                    if count == 1 {
                        tracing::error!(spiffe.id = spec.label(), error = %e, "SVID not issued: the CA cannot sign now; holders keep what they have and are retried");
                    } else {
                        tracing::debug!(spiffe.id = spec.label(), error = %e, failures = count, "SVID issuance still failing");
                    }
                    failing = Some(Failing {
                        last_at: now,
                        count,
                    });
                    if !held.as_ref().is_some_and(|h| h.valid_at(now)) {
                        held = None;
                        tx.send_replace(Current::Unavailable(e.to_string()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "svid_cache_tests.rs"]
mod tests;
