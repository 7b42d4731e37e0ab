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

/// The SVID a re-issue replaces, as its `svid.rotated` record names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    pub serial_hex: String,
    pub not_after: OffsetDateTime,
    pub signed_by: String,
}

/// `svid.rotated`: the one SVID of an identity issued again (at half its life, because the
/// signing CA changed, or after failures). It carries everything `svid.issued` does (so a
/// report judges its lifetime the same way) plus the SVID it replaces and why: whether it
/// was renewed before it expired is decided from `previous.not_after` and the event's time.
pub fn svid_rotated(
    svid: &IssuedSvid,
    replaced: &Replaced,
    reason: &str,
    actor: &str,
    via: &str,
    now: OffsetDateTime,
) -> Event {
    let mut e = svid_issued(svid, actor, via, now);
    e.kind = kind::SVID_ROTATED.into();
    e.action = "rotate".into();
    e.reason = reason.to_owned();
    let mut d = e.details.to_value();
    if let Some(o) = d.as_object_mut() {
        o.insert("previous.serial".into(), json!(replaced.serial_hex));
        o.insert(
            "previous.not_after".into(),
            json!(crate::rfc3339(replaced.not_after)),
        );
        o.insert("previous.signed_by".into(), json!(replaced.signed_by));
        o.insert("rotation.reason".into(), json!(reason));
    }
    e.details = d.into();
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
    fn rotation_names_the_replaced_svid_and_why() {
        let t0 = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let svid = IssuedSvid {
            spiffe_id: esm_identity::SpiffeId::parse("spiffe://example.org/web").unwrap(),
            serial_hex: "02".into(),
            not_before: t0,
            not_after: t0 + time::Duration::hours(1),
            cert_der: vec![1, 2, 3],
            intermediate_der: Vec::new(),
            signed_by: "int-2".into(),
            private_key: None,
        };
        let replaced = Replaced {
            serial_hex: "01".into(),
            not_after: t0 + time::Duration::minutes(30),
            signed_by: "int-1".into(),
        };
        let e = svid_rotated(&svid, &replaced, "ca_changed", "uid:1000", "sds", t0);
        assert_eq!(e.kind, kind::SVID_ROTATED);
        assert_eq!(e.outcome, Outcome::Success);
        assert_eq!(e.action, "rotate");
        assert_eq!(e.actor, "uid:1000");
        let d = e.details.to_value();
        assert_eq!(d["serial"], "02");
        assert_eq!(d["previous.serial"], "01");
        assert_eq!(d["previous.signed_by"], "int-1");
        assert_eq!(d["rotation.reason"], "ca_changed");
        assert_eq!(d["via"], "sds");
        assert_eq!(d["not_after"], crate::rfc3339(svid.not_after));
        assert_eq!(d["previous.not_after"], crate::rfc3339(replaced.not_after));
    }

    #[test]
    fn step_names_are_stable() {
        assert_eq!(step_name(Step::PrepareIntermediate), "prepare-intermediate");
        assert_eq!(step_name(Step::ActivateRoot), "activate-root");
    }
}
