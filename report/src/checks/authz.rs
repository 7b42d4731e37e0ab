//! ext_authz decisions: decided by a policy, deny-by-default policies, enforcement (dry-run
//! periods), and caller identities against registered entries.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::{Decision, Ev, Tally, MAX_KEYS};
use crate::model::{CheckResult, PolicyFact, Status};
use crate::period::rfc3339;

#[derive(Deserialize)]
struct EntryDetails<'a> {
    #[serde(rename = "entry.id", borrow)]
    id: Cow<'a, str>,
}

#[derive(Deserialize)]
struct PolicyDetails<'a> {
    #[serde(rename = "policy.hash", borrow, default)]
    hash: Option<Cow<'a, str>>,
}

struct DryRun {
    first_seq: u64,
    from_ns: i64,
    to_ns: i64,
    decisions: u64,
    would_deny: u64,
}

#[derive(Default)]
struct Unknown {
    first_seq: u64,
    allow: u64,
    deny: u64,
}

pub struct AuthzChecks {
    facts: HashMap<String, bool>,
    /// entry id → SPIFFE ID, and how many live entries grant each SPIFFE ID.
    entries: HashMap<String, String>,
    registered: HashMap<String, u32>,
    decisions: u64,
    by_policy: Tally,
    /// Policy hashes in force (from decisions and accepted policy changes), with the first
    /// event that shows each.
    hashes: BTreeMap<String, u64>,
    enforced: Tally,
    open_dry: BTreeMap<String, DryRun>,
    callers: Tally,
    unknown: BTreeMap<String, Unknown>,
    overflow: bool,
}

impl AuthzChecks {
    pub fn new(facts: &[PolicyFact]) -> Self {
        Self {
            facts: facts
                .iter()
                .map(|f| (f.hash.clone(), f.deny_by_default))
                .collect(),
            entries: HashMap::new(),
            registered: HashMap::new(),
            decisions: 0,
            by_policy: Tally::default(),
            hashes: BTreeMap::new(),
            enforced: Tally::default(),
            open_dry: BTreeMap::new(),
            callers: Tally::default(),
            unknown: BTreeMap::new(),
            overflow: false,
        }
    }

    pub fn prelude(&mut self, e: &Ev<'_>) {
        self.entry_change(e);
    }

    fn entry_change(&mut self, e: &Ev<'_>) {
        let created = e.kind == esm_audit::kind::ENTRY_CREATED;
        if !(created || e.kind == esm_audit::kind::ENTRY_DELETED) || e.outcome != "success" {
            return;
        }
        let Ok(d) = serde_json::from_str::<EntryDetails<'_>>(e.details) else {
            return;
        };
        if created {
            if self.entries.len() < MAX_KEYS {
                self.entries.insert(d.id.into_owned(), e.subject.to_owned());
                *self.registered.entry(e.subject.to_owned()).or_default() += 1;
            } else {
                self.overflow = true;
            }
        } else if let Some(id) = self.entries.remove(d.id.as_ref()) {
            if let Some(n) = self.registered.get_mut(&id) {
                *n -= 1;
                if *n == 0 {
                    self.registered.remove(&id);
                }
            }
        }
    }

    /// Events other than decisions: entry changes and accepted policy changes.
    pub fn other(&mut self, e: &Ev<'_>) {
        self.entry_change(e);
        if e.kind == esm_audit::kind::POLICY_CHANGED && e.outcome == "success" {
            if let Ok(PolicyDetails { hash: Some(h) }) = serde_json::from_str(e.details) {
                self.note_hash(&h, e.seq);
            }
        }
    }

    fn note_hash(&mut self, h: &str, seq: u64) {
        if !self.hashes.contains_key(h) && self.hashes.len() < MAX_KEYS {
            self.hashes.insert(h.to_owned(), seq);
        }
    }

    pub fn decision(&mut self, e: &Ev<'_>, d: &Decision<'_>) {
        self.decisions += 1;
        let set = d.policy_set.as_deref().unwrap_or("default");
        match d.policy_hash.as_deref() {
            Some(h) if !h.is_empty() => {
                self.by_policy.support(e.seq);
                self.note_hash(h, e.seq);
            }
            _ => self.by_policy.except_with(Some(e.seq), || {
                format!(
                    "{} → {} decided without a policy (set {set}): {}",
                    e.actor, e.subject, e.reason
                )
            }),
        }
        if d.dry_run {
            let would_deny = u64::from(d.policy_allowed == Some(false));
            match self.open_dry.get_mut(set) {
                Some(r) => {
                    r.to_ns = e.time_ns;
                    r.decisions += 1;
                    r.would_deny += would_deny;
                }
                None => {
                    self.open_dry.insert(
                        set.to_owned(),
                        DryRun {
                            first_seq: e.seq,
                            from_ns: e.time_ns,
                            to_ns: e.time_ns,
                            decisions: 1,
                            would_deny,
                        },
                    );
                }
            }
        } else {
            self.enforced.support(e.seq);
            if let Some(r) = self.open_dry.remove(set) {
                Self::close_dry(&mut self.enforced, set, &r);
            }
        }
        self.caller(e);
    }

    fn close_dry(t: &mut Tally, set: &str, r: &DryRun) {
        t.add("dry_run_decisions", r.decisions);
        t.except_with(
            Some(r.first_seq),
            || format!(
                "policy set {set} in dry-run from {} to {}: {} decisions, {} the policy would have denied",
                rfc3339(r.from_ns),
                rfc3339(r.to_ns),
                r.decisions,
                r.would_deny
            ),
        );
    }

    fn caller(&mut self, e: &Ev<'_>) {
        if self.registered.contains_key(e.actor) {
            self.callers.support(e.seq);
            return;
        }
        let allow = e.outcome == "allow";
        let full = self.unknown.len() >= MAX_KEYS;
        match self.unknown.get_mut(e.actor) {
            Some(u) => {
                u.allow += u64::from(allow);
                u.deny += u64::from(!allow);
            }
            None if !full => {
                self.unknown.insert(
                    e.actor.to_owned(),
                    Unknown {
                        first_seq: e.seq,
                        allow: u64::from(allow),
                        deny: u64::from(!allow),
                    },
                );
            }
            None => self.overflow = true,
        }
    }

    pub fn finish(mut self) -> Vec<CheckResult> {
        let n = self.decisions;
        self.by_policy.add("decisions", n);
        let by_policy = self.by_policy.judged("authz.decided_by_policy", n);

        let mut dbd = Tally::default();
        let mut unknown_hashes = 0;
        for (h, seq) in &self.hashes {
            match self.facts.get(h) {
                Some(true) => {
                    dbd.count("deny_by_default");
                    dbd.support(*seq);
                }
                Some(false) => dbd.except_with(Some(*seq), || {
                    format!("policy {h} allows a request it does not grant")
                }),
                None => {
                    unknown_hashes += 1;
                    dbd.except_with(
                        Some(*seq),
                        || format!("policy {h} was not available to examine (pass its files with --policies)"),
                    );
                }
            }
        }
        dbd.add("policies_in_force", self.hashes.len() as u64);
        let dbd = if unknown_hashes > 0 && dbd.exceptions_total == unknown_hashes {
            dbd.result("authz.deny_by_default", Status::InsufficientEvidence)
        } else {
            let k = self.hashes.len() as u64;
            dbd.judged("authz.deny_by_default", k)
        };

        for (set, r) in std::mem::take(&mut self.open_dry) {
            Self::close_dry(&mut self.enforced, &set, &r);
        }
        self.enforced.add("decisions", n);
        let enforced = self.enforced.judged("authz.enforced", n);

        for (id, u) in &self.unknown {
            let who = if id.is_empty() { "(no identity)" } else { id };
            self.callers.except_with(Some(u.first_seq), || {
                format!(
                    "caller {who} has no registration entry: {} allowed, {} denied",
                    u.allow, u.deny
                )
            });
        }
        self.callers.add("decisions", n);
        self.callers
            .add("unknown_identities", self.unknown.len() as u64);
        let callers = if self.overflow {
            self.callers.except_with(None, || {
                format!("more than {MAX_KEYS} identities or entries: not all tracked")
            });
            self.callers
                .result("authz.known_callers", Status::InsufficientEvidence)
        } else {
            self.callers.judged("authz.known_callers", n)
        };
        vec![by_policy, dbd, enforced, callers]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::checks::test_events::ev;

    const WEB: &str = "spiffe://t/web";

    fn facts(hash: &str, dbd: bool) -> Vec<PolicyFact> {
        vec![PolicyFact {
            hash: hash.into(),
            source: "test".into(),
            deny_by_default: dbd,
        }]
    }

    fn decide(c: &mut AuthzChecks, seq: u64, actor: &str, details: &str, outcome: &str) {
        let mut e = ev(seq, seq as i64, "authz.decision", details);
        e.actor = actor;
        e.outcome = outcome;
        c.decision(&e, &Decision::parse(details));
    }

    fn by_id(r: &[CheckResult], id: &str) -> CheckResult {
        r.iter().find(|c| c.id == id).unwrap().clone()
    }

    #[test]
    fn caller_without_entry_is_an_exception_and_registered_one_is_not() {
        let mut c = AuthzChecks::new(&facts("h1", true));
        let mut created = ev(1, 0, "entry.created", r#"{"entry.id":"e1"}"#);
        created.subject = WEB;
        c.prelude(&created);
        let d =
            r#"{"dry_run":false,"policy.hash":"h1","policy.set":"default","policy_allowed":true}"#;
        decide(&mut c, 2, WEB, d, "allow");
        decide(&mut c, 3, "spiffe://t/other", d, "deny");
        let r = c.finish();
        let callers = by_id(&r, "authz.known_callers");
        assert_eq!(callers.status, Status::Failed);
        assert_eq!(callers.exceptions[0].seq, Some(3));
        assert!(callers.exceptions[0].message.contains("spiffe://t/other"));
        assert_eq!(by_id(&r, "authz.deny_by_default").status, Status::Passed);
        assert_eq!(by_id(&r, "authz.decided_by_policy").status, Status::Passed);
    }

    #[test]
    fn deleted_entry_no_longer_registers_its_identity() {
        let mut c = AuthzChecks::new(&facts("h1", true));
        let mut created = ev(1, 0, "entry.created", r#"{"entry.id":"e1"}"#);
        created.subject = WEB;
        c.other(&created);
        let mut deleted = ev(2, 1, "entry.deleted", r#"{"entry.id":"e1"}"#);
        deleted.subject = WEB;
        c.other(&deleted);
        decide(&mut c, 3, WEB, r#"{"policy.hash":"h1"}"#, "allow");
        assert_eq!(
            by_id(&c.finish(), "authz.known_callers").status,
            Status::Failed
        );
    }

    #[test]
    fn dry_run_period_is_listed_once_with_its_counts() {
        let mut c = AuthzChecks::new(&facts("h1", true));
        let dry =
            r#"{"dry_run":true,"policy.hash":"h1","policy.set":"canary","policy_allowed":false}"#;
        let live =
            r#"{"dry_run":false,"policy.hash":"h1","policy.set":"canary","policy_allowed":true}"#;
        decide(&mut c, 1, WEB, dry, "allow");
        decide(&mut c, 2, WEB, dry, "allow");
        decide(&mut c, 3, WEB, live, "allow");
        let r = by_id(&c.finish(), "authz.enforced");
        assert_eq!(r.status, Status::Failed);
        assert_eq!(r.exceptions.len(), 1);
        assert!(r.exceptions[0]
            .message
            .contains("2 decisions, 2 the policy would have denied"));
    }

    #[test]
    fn unexamined_policy_is_insufficient_and_permissive_one_fails() {
        let mut c = AuthzChecks::new(&[]);
        decide(&mut c, 1, WEB, r#"{"policy.hash":"h9"}"#, "allow");
        assert_eq!(
            by_id(&c.finish(), "authz.deny_by_default").status,
            Status::InsufficientEvidence
        );
        let mut c = AuthzChecks::new(&facts("h1", false));
        decide(&mut c, 1, WEB, r#"{"policy.hash":"h1"}"#, "allow");
        assert_eq!(
            by_id(&c.finish(), "authz.deny_by_default").status,
            Status::Failed
        );
    }

    #[test]
    fn decision_without_policy_fails_decided_by_policy() {
        let mut c = AuthzChecks::new(&[]);
        decide(&mut c, 1, WEB, r#"{"policy.set":"missing"}"#, "deny");
        assert_eq!(
            by_id(&c.finish(), "authz.decided_by_policy").status,
            Status::Failed
        );
    }
}
