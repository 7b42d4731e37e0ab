//! NIST OSCAL 1.1.2 assessment-results: one result for the period, the framework's controls
//! as reviewed controls, one observation per check (its evidence points at audit sequence
//! numbers) and one finding per control. UUIDs are derived from the report, so the same
//! report gives the same document.

use serde_json::{json, Value};

use super::counts_text;
use crate::error::{Error, Result};
use crate::model::{CheckpointText, Report, Status};

/// Namespace of esm's own props (a name, never fetched).
const NS: &str = "https://esm.invalid/ns/report";
const OSCAL_VERSION: &str = "1.1.2";

/// A version-5-shaped UUID from `seed`, stable across renderings of one report.
fn uuid(r: &Report, seed: &str) -> String {
    let cp = r
        .integrity
        .checkpoint
        .as_ref()
        .map_or("", |c| c.root_hash.as_str());
    let base = format!(
        "{}|{}|{}|{}|{cp}|{seed}",
        r.framework.id, r.period.from, r.period.to, r.generated_at
    );
    let d = ring::digest::digest(&ring::digest::SHA256, base.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// An OSCAL token (starts with a letter): `CC6.1` → `cc6.1`, `5.15` → `a.5.15`.
pub fn control_token(id: &str) -> String {
    let t: String = id
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if t.starts_with(|c: char| c.is_ascii_alphabetic()) {
        t
    } else {
        format!("a.{t}")
    }
}

fn prop(name: &str, value: impl ToString) -> Value {
    json!({ "name": name, "ns": NS, "value": value.to_string() })
}

fn seal_props_of(r: &Report) -> Vec<Value> {
    let mut p = vec![
        prop("esm-report-digest", &r.digest),
        prop("esm-result", &r.summary.result),
        prop("esm-log-verified", r.integrity.verified),
        prop("esm-version", &r.esm_version),
        prop("esm-store", &r.scope.store),
        prop("esm-events-in-period", r.scope.events_in_period),
    ];
    if let Some(c) = &r.integrity.checkpoint {
        p.extend([
            prop("esm-checkpoint-tree-size", c.tree_size),
            prop("esm-checkpoint-root-hash", &c.root_hash),
            prop("esm-checkpoint-last-hash", &c.last_hash),
            prop("esm-checkpoint-time", &c.time),
            prop("esm-checkpoint-time-ns", c.time_ns),
            prop("esm-checkpoint-key-id", &c.key_id),
            prop("esm-checkpoint-signature", &c.signature),
        ]);
    }
    p
}

/// The digest and checkpoint from a rendered document's metadata.
pub fn seal_props(ar: &Value) -> Option<(String, Option<CheckpointText>)> {
    let props = ar.pointer("/metadata/props")?.as_array()?;
    let get = |n: &str| {
        props
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(n))
            .and_then(|p| p.get("value")?.as_str())
    };
    let digest = get("esm-report-digest")?.to_owned();
    let checkpoint = (|| {
        Some(CheckpointText {
            tree_size: get("esm-checkpoint-tree-size")?.parse().ok()?,
            root_hash: get("esm-checkpoint-root-hash")?.to_owned(),
            last_hash: get("esm-checkpoint-last-hash")?.to_owned(),
            time: get("esm-checkpoint-time")?.to_owned(),
            time_ns: get("esm-checkpoint-time-ns")?.parse().ok()?,
            key_id: get("esm-checkpoint-key-id")?.to_owned(),
            signature: get("esm-checkpoint-signature")?.to_owned(),
        })
    })();
    Some((digest, checkpoint))
}

fn satisfied(s: Status) -> &'static str {
    if s.fails() {
        "not-satisfied"
    } else {
        "satisfied"
    }
}

pub fn render(r: &Report) -> Result<String> {
    let warning = if r.integrity.verified {
        String::new()
    } else {
        format!(
            "THE AUDIT LOG DOES NOT VERIFY: {}. Every control that relies on the log fails. ",
            r.integrity.reason.as_deref().unwrap_or("unknown reason")
        )
    };
    let mut observations = Vec::new();
    let mut findings = Vec::new();
    for c in &r.controls {
        let mut related = Vec::new();
        for k in &c.checks {
            let id = uuid(r, &format!("obs|{}|{}", c.id, k.id));
            let mut desc = format!(
                "{} Status: {}. Counts: {}.",
                k.description,
                k.status.as_str(),
                counts_text(&k.counts)
            );
            for x in &k.exceptions {
                match x.seq {
                    Some(s) => desc.push_str(&format!(" Exception at seq {s}: {}.", x.message)),
                    None => desc.push_str(&format!(" Exception: {}.", x.message)),
                }
            }
            let mut o = json!({
                "uuid": id,
                "title": format!("{} — {}", c.id, k.id),
                "description": desc,
                "props": [prop("esm-check-status", k.status.as_str())],
                "methods": [if k.status == Status::Manual { "EXAMINE" } else { "TEST" }],
                "collected": r.generated_at,
            });
            let evidence: Vec<Value> = k
                .sample
                .iter()
                .map(|s| json!({
                    "href": format!("urn:esm:audit:seq:{s}"),
                    "description": format!("Audit event {s}; prove its inclusion with `esm audit prove {s}`."),
                }))
                .chain(k.exceptions.iter().filter_map(|x| x.seq).map(|s| json!({
                    "href": format!("urn:esm:audit:seq:{s}"),
                    "description": format!("Audit event {s} (an exception); `esm audit prove {s}`."),
                })))
                .collect();
            if !evidence.is_empty() {
                o["relevant-evidence"] = Value::Array(evidence);
            }
            related.push(json!({ "observation-uuid": id }));
            observations.push(o);
        }
        let token = control_token(&c.id);
        let mut status = json!({
            "state": satisfied(c.status),
            "reason": if c.status.fails() { "fail" } else { "pass" },
        });
        if matches!(c.status, Status::Manual | Status::NotApplicable) {
            status["remarks"] = Value::String(format!("esm status: {}", c.status.as_str()));
        }
        let mut f = json!({
            "uuid": uuid(r, &format!("finding|{}", c.id)),
            "title": format!("{} {}", c.id, c.title),
            "description": format!("{warning}{}", c.statement),
            "props": [prop("esm-control-status", c.status.as_str())],
            "target": {
                "type": "objective-id",
                "target-id": format!("{token}_obj"),
                "status": status,
            },
        });
        if !related.is_empty() {
            f["related-observations"] = Value::Array(related);
        }
        findings.push(f);
    }
    let resource = uuid(r, "framework");
    let doc = json!({
        "assessment-results": {
            "uuid": uuid(r, "assessment-results"),
            "metadata": {
                "title": format!("esm compliance report: {}", r.framework.name),
                "last-modified": r.generated_at,
                "version": r.esm_version,
                "oscal-version": OSCAL_VERSION,
                "props": seal_props_of(r),
                "remarks": format!(
                    "{warning}Computed by esm {} from {} against the signed audit checkpoint named in the props; digest: SHA-256 of this file with its 64 digits as zeros.",
                    r.esm_version, r.scope.store
                ),
            },
            "import-ap": { "href": format!("#{resource}") },
            "results": [{
                "uuid": uuid(r, "result"),
                "title": format!("{} for {} to {}", r.framework.name, r.period.from, r.period.to),
                "description": format!(
                    "{warning}Result: {}. Controls: {}.",
                    r.summary.result,
                    counts_text(&r.summary.counts)
                ),
                "start": r.period.from,
                "end": r.period.to,
                "reviewed-controls": {
                    "control-selections": [{
                        "include-controls": r.controls.iter()
                            .map(|c| json!({ "control-id": control_token(&c.id) }))
                            .collect::<Vec<_>>(),
                    }],
                },
                "observations": observations,
                "findings": findings,
            }],
            "back-matter": {
                "resources": [{
                    "uuid": resource,
                    "title": format!("{} ({}, version {})", r.framework.name, r.framework.id, r.framework.version),
                    "description": "The framework esm assessed against; esm has no separate assessment plan, so this stands in for it.",
                }],
            },
        }
    });
    let mut s =
        serde_json::to_string_pretty(&doc).map_err(|e| Error::Bug(format!("OSCAL JSON: {e}")))?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_ids_become_oscal_tokens() {
        assert_eq!(control_token("CC6.1"), "cc6.1");
        assert_eq!(control_token("5.15"), "a.5.15");
        assert_eq!(control_token("A 8/2"), "a-8-2");
    }
}
