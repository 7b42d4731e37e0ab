//! The report's integrity: a SHA-256 digest over the exact output file (with the digest's
//! own 64 hex digits written as zeros), and the signed audit checkpoint it was computed
//! against. `verify` recomputes the first and checks the second's signature.

use esm_audit::checkpoint::{Checkpoint, PublicKey};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{CheckpointText, Report};
use crate::render::Format;

pub const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The line of Markdown and HTML reports that carries the digest and checkpoint as JSON.
pub const SEAL_MARK: &str = "esm-report-seal";

fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

/// Renders `report` in `format` with its digest filled in.
pub fn sealed(report: &Report, format: Format) -> Result<String> {
    let mut r = report.clone();
    r.digest = format!("sha256:{ZEROS}");
    let draft = crate::render::render(&r, format)?;
    r.digest = format!("sha256:{}", sha256_hex(&draft));
    let text = crate::render::render(&r, format)?;
    if text.replace(&r.digest, &format!("sha256:{ZEROS}")) != draft {
        return Err(Error::Bug("report rendering is not deterministic".into()));
    }
    Ok(text)
}

/// What a verified report vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub digest: String,
    pub tree_size: u64,
    pub key_id: String,
}

/// Why a report does not verify: the caller's file was edited or signed by another key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the digest does not match the content: the report was edited")]
    Digest,
    #[error("the checkpoint signature does not verify under key {0}")]
    Signature(String),
    #[error("the report names no signed checkpoint")]
    NoCheckpoint,
}

struct Seal {
    digest: String,
    checkpoint: Option<CheckpointText>,
}

fn seal_of(text: &str) -> Result<Seal> {
    let from_json = |v: &Value| -> Option<Seal> {
        let digest = v.get("digest")?.as_str()?.to_owned();
        let checkpoint = v
            .pointer("/integrity/checkpoint")
            .or_else(|| v.get("checkpoint"))
            .and_then(|c| serde_json::from_value(c.clone()).ok());
        Some(Seal { digest, checkpoint })
    };
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        if let Some(ar) = v.get("assessment-results") {
            return crate::render::oscal::seal_props(ar)
                .map(|(digest, checkpoint)| Seal { digest, checkpoint })
                .ok_or_else(|| Error::NotAReport("OSCAL document without esm's seal".into()));
        }
        return from_json(&v).ok_or_else(|| Error::NotAReport("JSON without a digest".into()));
    }
    // The seal's JSON object starts at the first `{` after the mark and ends where the
    // object does (the HTML and Markdown around it are not JSON).
    let at = text
        .find(SEAL_MARK)
        .ok_or_else(|| Error::NotAReport(format!("no {SEAL_MARK}")))?;
    let brace = text[at..]
        .find('{')
        .ok_or_else(|| Error::NotAReport("unreadable seal".into()))?;
    let v: Value = serde_json::Deserializer::from_str(&text[at + brace..])
        .into_iter::<Value>()
        .next()
        .ok_or_else(|| Error::NotAReport("empty seal".into()))?
        .map_err(|e| Error::NotAReport(format!("seal: {e}")))?;
    from_json(&v).ok_or_else(|| Error::NotAReport("seal without a digest".into()))
}

/// `Ok(Ok(_))`: intact and signed; `Ok(Err(_))`: edited or not signed by `key`.
pub fn verify(text: &str, key: &PublicKey) -> Result<std::result::Result<Verified, Rejected>> {
    let seal = seal_of(text)?;
    let Some(hex_digest) = seal.digest.strip_prefix("sha256:") else {
        return Err(Error::NotAReport("digest is not sha256:…".into()));
    };
    if hex_digest.len() != 64 || !hex_digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Err(Rejected::Digest));
    }
    let zeroed = text.replace(&seal.digest, &format!("sha256:{ZEROS}"));
    if zeroed == text || sha256_hex(&zeroed) != hex_digest {
        return Ok(Err(Rejected::Digest));
    }
    let Some(c) = seal.checkpoint else {
        return Ok(Err(Rejected::NoCheckpoint));
    };
    let decode32 = |h: &str| -> Option<[u8; 32]> { hex::decode(h).ok()?.try_into().ok() };
    let cp = match (
        decode32(&c.root_hash),
        decode32(&c.last_hash),
        hex::decode(&c.signature),
    ) {
        (Some(root), Some(last_hash), Ok(signature)) => Checkpoint {
            tree_size: c.tree_size,
            root,
            last_hash,
            time_ns: c.time_ns,
            key_id: c.key_id.clone(),
            signature,
        },
        _ => return Ok(Err(Rejected::Signature(key.id.clone()))),
    };
    if !cp.verify(key) {
        return Ok(Err(Rejected::Signature(key.id.clone())));
    }
    Ok(Ok(Verified {
        digest: seal.digest,
        tree_size: c.tree_size,
        key_id: c.key_id,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use esm_audit::checkpoint::SigningKey;

    use super::*;
    use crate::model::*;

    fn report(key: &SigningKey) -> Report {
        let cp = key.sign(7, [1; 32], [2; 32], 42).unwrap();
        Report {
            schema_version: SCHEMA_VERSION.into(),
            framework: FrameworkInfo {
                id: "soc2".into(),
                name: "SOC 2".into(),
                version: "2017".into(),
                source: "builtin".into(),
            },
            period: PeriodText {
                from: "2026-01-01T00:00:00Z".into(),
                to: "2026-02-01T00:00:00Z".into(),
            },
            generated_at: "2026-02-01T00:00:01Z".into(),
            esm_version: "0.1.0".into(),
            scope: Scope {
                store: "sqlite://x".into(),
                trust_domains: vec![],
                nodes: vec![],
                events_in_period: 7,
                first_seq: Some(1),
                last_seq: Some(7),
                parameters: Parameters {
                    svid_max_ttl_secs: Some(3600),
                    clock_tolerance_secs: 2,
                    checkpoint_every: 10,
                    checkpoint_interval_secs: 60,
                    spike_min_denials: 50,
                    spike_factor: 10,
                    baseline_hours: 24,
                    policies: vec![],
                },
            },
            integrity: Integrity {
                verified: true,
                reason: None,
                events_verified: 7,
                checkpoint: Some(CheckpointText {
                    tree_size: 7,
                    root_hash: hex::encode(cp.root),
                    last_hash: hex::encode(cp.last_hash),
                    time: "1970-01-01T00:00:00.000000042Z".into(),
                    time_ns: 42,
                    key_id: cp.key_id.clone(),
                    signature: hex::encode(&cp.signature),
                }),
            },
            summary: Summary {
                result: "fail".into(),
                counts: BTreeMap::new(),
            },
            controls: vec![ControlResult {
                id: "CC6.1".into(),
                title: "t".into(),
                statement: "s".into(),
                status: Status::Failed,
                checks: vec![],
            }],
            activity: Activity::default(),
            digest: String::new(),
        }
    }

    #[test]
    fn every_format_verifies_and_an_edit_is_caught() {
        let key = SigningKey::ephemeral().unwrap();
        let r = report(&key);
        for f in [Format::Json, Format::Md, Format::Html, Format::Oscal] {
            let text = sealed(&r, f).unwrap();
            assert!(verify(&text, &key.public()).unwrap().is_ok(), "{f:?}");
            // The attack: a failed control turned into a passed one.
            let edited = text.replacen("failed", "passed", 1);
            assert_ne!(edited, text);
            assert_eq!(
                verify(&edited, &key.public()).unwrap(),
                Err(Rejected::Digest),
                "{f:?}"
            );
        }
    }

    #[test]
    fn checkpoint_of_another_key_or_forged_is_refused() {
        let key = SigningKey::ephemeral().unwrap();
        let text = sealed(&report(&key), Format::Json).unwrap();
        let other = SigningKey::ephemeral().unwrap();
        assert!(matches!(
            verify(&text, &other.public()).unwrap(),
            Err(Rejected::Signature(_))
        ));
        // A forger who re-digests after changing the checkpoint still lacks the signature.
        let mut r = report(&key);
        if let Some(c) = r.integrity.checkpoint.as_mut() {
            c.tree_size = 8;
        }
        let forged = sealed(&r, Format::Md).unwrap();
        assert!(matches!(
            verify(&forged, &key.public()).unwrap(),
            Err(Rejected::Signature(_))
        ));
    }
}
