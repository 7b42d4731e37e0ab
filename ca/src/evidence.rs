//! The audit events the CA emits. Pure constructors, so what an auditor will read about an
//! issuance or a rotation is decided here and tested without a store. Nothing secret goes
//! in: certificates are named by serial and fingerprint, never with key material.

use esm_audit::{kind, Event, Outcome};
use serde_json::json;
use time::OffsetDateTime;

use crate::issuer::IssuedSvid;
use crate::rotation::Step;
use crate::state::{Authority, CaState};

fn sha256_hex(der: &[u8]) -> String {
    crate::issuer::hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// `svid.issued`: who asked, for which SPIFFE ID, which serial, valid when, signed by which CA.
pub fn svid_issued(svid: &IssuedSvid, actor: &str, via: &str, now: OffsetDateTime) -> Event {
    let mut e = Event::new(kind::SVID_ISSUED, Outcome::Success);
    e.time = now;
    e.actor = actor.to_owned();
    e.subject = svid.spiffe_id.to_string();
    e.action = "issue".into();
    e.details = json!({
        "serial": svid.serial_hex,
        "not_before": crate::rfc3339(svid.not_before),
        "not_after": crate::rfc3339(svid.not_after),
        "signed_by": svid.signed_by,
        "cert_sha256": sha256_hex(&svid.cert_der),
        "key_source": if svid.private_key.is_some() { "generated" } else { "csr" },
        "via": via,
    })
    .into();
    e
}

/// `svid.issued` with outcome failure: a refused request is evidence too.
pub fn svid_refused(spiffe_id: &str, actor: &str, reason: &str, now: OffsetDateTime) -> Event {
    let mut e = Event::new(kind::SVID_ISSUED, Outcome::Failure);
    e.time = now;
    e.actor = actor.to_owned();
    e.subject = spiffe_id.to_owned();
    e.action = "issue".into();
    e.reason = reason.to_owned();
    e
}

fn authority_json(a: &Authority) -> serde_json::Value {
    json!({
        "id": a.id,
        "kind": format!("{:?}", a.kind).to_lowercase(),
        "status": format!("{:?}", a.status).to_lowercase(),
        "algorithm": a.algorithm.to_string(),
        "key_backend": a.key_backend,
        "not_before": crate::rfc3339(a.not_before),
        "not_after": crate::rfc3339(a.not_after),
        "upstream": a.upstream,
    })
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::PrepareIntermediate => "prepare-intermediate",
        Step::ActivateIntermediate => "activate-intermediate",
        Step::PrepareRoot => "prepare-root",
        Step::ActivateRoot => "activate-root",
    }
}

/// `ca.rotated`: one rotation step, with the CA state after it (ids, statuses, validity) and
/// `key_backend`, the custody of each current key (`CaStore::key_custody`): so key custody
/// can be told from the log alone.
pub fn ca_rotated(
    step: Step,
    state: &CaState,
    key_backend: &serde_json::Value,
    actor: &str,
    now: OffsetDateTime,
) -> Event {
    let mut e = Event::new(kind::CA_ROTATED, Outcome::Success);
    e.time = now;
    e.actor = actor.to_owned();
    e.subject = format!("spiffe://{}", state.trust_domain);
    e.action = step_name(step).into();
    e.details = json!({
        "bundle_sequence": state.bundle_sequence,
        "authorities": state.authorities.iter().map(authority_json).collect::<Vec<_>>(),
        "key_backend": key_backend,
    })
    .into();
    e
}

/// `ca.rotated` with outcome failure: the schedule could not be applied.
pub fn ca_rotation_failed(trust_domain: &str, actor: &str, reason: &str) -> Event {
    let mut e = Event::new(kind::CA_ROTATED, Outcome::Failure);
    e.actor = actor.to_owned();
    e.subject = format!("spiffe://{trust_domain}");
    e.action = "rotate".into();
    e.reason = reason.to_owned();
    e
}

/// `ca.initialized`: a new trust domain with its first root and signing CA, and where their
/// keys are kept (`key_backend`, as in [`ca_rotated`]).
pub fn ca_initialized(
    state: &CaState,
    key_backend: &serde_json::Value,
    actor: &str,
    now: OffsetDateTime,
) -> Event {
    let mut e = Event::new(kind::CA_INITIALIZED, Outcome::Success);
    e.time = now;
    e.actor = actor.to_owned();
    e.subject = format!("spiffe://{}", state.trust_domain);
    e.action = "init".into();
    e.details = json!({
        "bundle_sequence": state.bundle_sequence,
        "authorities": state.authorities.iter().map(authority_json).collect::<Vec<_>>(),
        "key_backend": key_backend,
    })
    .into();
    e
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn refused_issuance_carries_reason_and_failure_outcome() {
        let e = svid_refused(
            "spiffe://example.org/x",
            "cli:uid:0",
            "CSR asks for CA",
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_eq!(e.outcome, Outcome::Failure);
        assert_eq!(e.kind, kind::SVID_ISSUED);
        assert_eq!(e.reason, "CSR asks for CA");
        assert_eq!(e.subject, "spiffe://example.org/x");
    }

    #[test]
    fn step_names_are_stable() {
        assert_eq!(step_name(Step::PrepareIntermediate), "prepare-intermediate");
        assert_eq!(step_name(Step::ActivateRoot), "activate-root");
    }
}
