//! Changes: who made each policy, entry and CA change (and to which policy hash), where the
//! CA's keys are held (and the audit checkpoint key, as a count: keeping it in a file is
//! allowed), and whether CA rotations succeeded.

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::Deserialize;

use super::{Ev, Tally};
use crate::model::{CheckResult, Status};

/// Key backends that keep the CA's keys out of files esm can read.
const PROTECTED_BACKENDS: &[&str] = &["pkcs11", "hsm", "azure-key-vault", "aws-kms", "gcp-kms"];

/// The CA's own scheduled rotations: attributed to the configured schedule.
const SCHEDULER: &str = "esm:rotator";

#[derive(Deserialize)]
struct CaDetails<'a> {
    #[serde(borrow, default)]
    authorities: Vec<Authority<'a>>,
    /// The custody record of each key; `audit` is the checkpoint key's (written by
    /// `esm init` since the audit key could live in an HSM or vault).
    #[serde(borrow, default)]
    key_backend: Option<Custody<'a>>,
}

#[derive(Deserialize)]
struct Custody<'a> {
    #[serde(borrow, default)]
    audit: Option<KeyCustody<'a>>,
}

#[derive(Deserialize)]
struct KeyCustody<'a> {
    #[serde(borrow, default)]
    backend: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Authority<'a> {
    #[serde(borrow, default)]
    key_backend: Option<Cow<'a, str>>,
}

fn is_ca_change(e: &Ev<'_>) -> bool {
    e.kind == esm_audit::kind::CA_INITIALIZED || e.kind == esm_audit::kind::CA_ROTATED
}

#[derive(Default)]
pub struct CaChecks {
    /// Backends of the CA state in force at the start and after every change in the period.
    backends: BTreeSet<String>,
    first_seen: Option<u64>,
    in_force: BTreeSet<String>,
    /// The backend of the audit checkpoint key, when a CA event recorded it.
    audit_key: Option<String>,
    rotation: Tally,
    rotations: u64,
}

impl CaChecks {
    fn read_state(&mut self, e: &Ev<'_>) -> bool {
        if !is_ca_change(e) || e.outcome != "success" {
            return false;
        }
        let Ok(d) = serde_json::from_str::<CaDetails<'_>>(e.details) else {
            return false;
        };
        if let Some(b) = d.key_backend.and_then(|k| k.audit?.backend) {
            self.audit_key = Some(b.into_owned());
        }
        let now: BTreeSet<String> = d
            .authorities
            .iter()
            .filter_map(|a| a.key_backend.as_deref().map(str::to_owned))
            .collect();
        if now.is_empty() {
            return false;
        }
        self.in_force = now;
        self.first_seen.get_or_insert(e.seq);
        true
    }

    pub fn prelude(&mut self, e: &Ev<'_>) {
        self.read_state(e);
    }

    pub fn observe(&mut self, e: &Ev<'_>) {
        if self.backends.is_empty() {
            // The state in force when the period started.
            self.backends.extend(self.in_force.iter().cloned());
        }
        if self.read_state(e) {
            self.backends.extend(self.in_force.iter().cloned());
        }
        if e.kind == esm_audit::kind::CA_ROTATED {
            self.rotations += 1;
            if e.outcome == "success" {
                self.rotation.support(e.seq);
            } else {
                self.rotation
                    .except_with(Some(e.seq), || format!("CA rotation failed: {}", e.reason));
            }
        }
    }

    pub fn finish(mut self) -> Vec<CheckResult> {
        if self.backends.is_empty() {
            self.backends.extend(self.in_force.iter().cloned());
        }
        let mut custody = Tally::default();
        let custody = if self.backends.is_empty() {
            custody.except(
                None,
                "no ca.initialized or ca.rotated event names the key backend",
            );
            custody.result("ca.key_custody", Status::InsufficientEvidence)
        } else {
            if let Some(s) = self.first_seen {
                custody.support(s);
            }
            let mut unknown = false;
            for b in &self.backends {
                if b == "file" {
                    custody.except(
                        self.first_seen,
                        "CA keys are held in files on the host (key backend \"file\")",
                    );
                } else if !PROTECTED_BACKENDS.contains(&b.as_str()) {
                    unknown = true;
                    custody.count("unknown_backends");
                }
            }
            custody.add("backends", self.backends.len() as u64);
            match self.audit_key.as_deref() {
                Some(b) if PROTECTED_BACKENDS.contains(&b) => custody.count("audit_key_protected"),
                Some(_) => custody.count("audit_key_in_file"),
                None => {}
            }
            if custody.exceptions_total == 0 && unknown {
                custody.result("ca.key_custody", Status::InsufficientEvidence)
            } else {
                let n = self.backends.len() as u64;
                custody.judged("ca.key_custody", n)
            }
        };
        self.rotation.add("rotations", self.rotations);
        let n = self.rotations;
        vec![custody, self.rotation.judged("ca.rotation_healthy", n)]
    }
}

#[derive(Default)]
pub struct ChangeChecks {
    t: Tally,
    changes: u64,
}

#[derive(Deserialize)]
struct PolicyHash<'a> {
    #[serde(rename = "policy.hash", borrow, default)]
    hash: Option<Cow<'a, str>>,
}

impl ChangeChecks {
    pub fn observe(&mut self, e: &Ev<'_>) {
        use esm_audit::kind;
        let what = match e.kind {
            kind::POLICY_CHANGED => "policy",
            kind::ENTRY_CREATED | kind::ENTRY_DELETED => "entry",
            kind::CA_INITIALIZED | kind::CA_ROTATED => "ca",
            kind::CONFIG_CHANGED => "config",
            _ => return,
        };
        if e.outcome != "success" {
            return; // refused changes changed nothing
        }
        self.changes += 1;
        self.t.count(what);
        let mut problems = Vec::new();
        if e.actor.is_empty() {
            problems.push("names no actor".to_owned());
        } else if e.actor.ends_with(":unknown") {
            problems.push(format!("actor {} names no one", e.actor));
        } else if what == "policy" && e.actor.starts_with("esm:") {
            problems.push(format!(
                "made by {} (a file watcher): no person is named",
                e.actor
            ));
        } else if what == "ca" && e.actor == SCHEDULER {
            self.t.count("scheduled");
        }
        if what == "policy" {
            let hash = serde_json::from_str::<PolicyHash<'_>>(e.details)
                .ok()
                .and_then(|d| d.hash)
                .filter(|h| !h.is_empty());
            if hash.is_none() {
                problems.push("records no policy hash".into());
            }
        }
        if problems.is_empty() {
            self.t.support(e.seq);
        } else {
            self.t.except_with(Some(e.seq), || {
                format!("{} change of {}: {}", what, e.subject, problems.join("; "))
            });
        }
    }

    pub fn finish(mut self) -> CheckResult {
        self.t.add("changes", self.changes);
        let n = self.changes;
        self.t.judged("change.attributed", n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::checks::test_events::ev;

    const FILE_CA: &str = r#"{"authorities":[{"key_backend":"file"}]}"#;
    const HSM_CA: &str = r#"{"authorities":[{"key_backend":"pkcs11"}]}"#;

    #[test]
    fn file_backend_is_a_finding_and_hsm_passes() {
        let mut c = CaChecks::default();
        c.prelude(&ev(1, 0, "ca.initialized", FILE_CA));
        assert_eq!(c.finish()[0].status, Status::Failed);
        let mut c = CaChecks::default();
        c.prelude(&ev(1, 0, "ca.initialized", HSM_CA));
        c.observe(&ev(2, 5, "authz.decision", "{}"));
        assert_eq!(c.finish()[0].status, Status::Passed);
    }

    #[test]
    fn the_audit_keys_custody_is_counted_not_judged() {
        let with_audit = |ca: &str, audit: &str| {
            format!(
                r#"{{"authorities":[{{"key_backend":"{ca}"}}],"key_backend":{{"audit":{{"backend":"{audit}"}}}}}}"#
            )
        };
        let mut c = CaChecks::default();
        c.prelude(&ev(1, 0, "ca.initialized", &with_audit("pkcs11", "pkcs11")));
        let r = &c.finish()[0];
        assert_eq!(r.status, Status::Passed);
        assert_eq!(r.counts.get("audit_key_protected"), Some(&1));
        let mut c = CaChecks::default();
        c.prelude(&ev(1, 0, "ca.initialized", &with_audit("pkcs11", "file")));
        let r = &c.finish()[0];
        assert_eq!(r.status, Status::Passed);
        assert_eq!(r.counts.get("audit_key_in_file"), Some(&1));
        // A custody record that could not be read (an error) counts nothing.
        let mut c = CaChecks::default();
        c.prelude(&ev(
            1,
            0,
            "ca.rotated",
            r#"{"authorities":[{"key_backend":"pkcs11"}],"key_backend":{"error":"x"}}"#,
        ));
        assert!(!c.finish()[0]
            .counts
            .keys()
            .any(|k| k.starts_with("audit_key")));
    }

    #[test]
    fn backend_never_recorded_is_insufficient_evidence() {
        let mut c = CaChecks::default();
        c.observe(&ev(1, 0, "svid.issued", "{}"));
        assert_eq!(c.finish()[0].status, Status::InsufficientEvidence);
    }

    #[test]
    fn file_keys_in_force_for_part_of_the_period_still_fail() {
        let mut c = CaChecks::default();
        c.prelude(&ev(1, 0, "ca.initialized", FILE_CA));
        c.observe(&ev(2, 5, "ca.rotated", HSM_CA));
        let r = c.finish();
        assert_eq!(r[0].status, Status::Failed);
        assert_eq!(r[1].status, Status::Passed);
    }

    #[test]
    fn policy_change_by_the_watcher_or_without_hash_is_an_exception() {
        let mut c = ChangeChecks::default();
        let mut p = ev(1, 0, "policy.changed", r#"{"policy.hash":"abc"}"#);
        p.actor = "esm:policy-reload";
        c.observe(&p);
        let mut q = ev(2, 1, "policy.changed", "{}");
        q.actor = "cli:uid:0";
        c.observe(&q);
        let mut ok = ev(3, 2, "entry.created", "{}");
        ok.actor = "admin-socket:uid:0";
        c.observe(&ok);
        let mut rot = ev(4, 3, "ca.rotated", "{}");
        rot.actor = SCHEDULER;
        c.observe(&rot);
        let r = c.finish();
        assert_eq!(r.status, Status::Failed);
        assert_eq!(
            r.exceptions.iter().map(|x| x.seq).collect::<Vec<_>>(),
            vec![Some(1), Some(2)]
        );
        assert_eq!(r.sample, vec![3, 4]);
    }

    #[test]
    fn policy_reload_by_a_files_owner_is_attributed_and_a_removal_is_not() {
        let reload = |seq: u64, actor: &'static str| {
            let mut p = ev(
                seq,
                seq as i64,
                "policy.changed",
                r#"{"policy.hash":"abc","changed.via":"esm:policy-reload"}"#,
            );
            p.actor = actor;
            p
        };
        let mut c = ChangeChecks::default();
        c.observe(&reload(1, "uid:1000"));
        c.observe(&reload(2, "uid:0,uid:1000"));
        let r = c.finish();
        assert_eq!(r.status, Status::Passed);
        assert_eq!(r.sample, vec![1, 2]);
        let mut c = ChangeChecks::default();
        c.observe(&reload(1, "uid:1000"));
        c.observe(&reload(2, "uid:unknown"));
        let r = c.finish();
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.exceptions.len(), 1);
        assert_eq!(r.exceptions[0].seq, Some(2));
        assert!(r.exceptions[0].message.contains("names no one"));
    }
}
