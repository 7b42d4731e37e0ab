//! The evidence checks. Each is an accumulator fed every event of the period once, in
//! sequence order, holding only bounded state; `finish` turns it into a [`CheckResult`].
//! They are pure: no I/O, tested with hand-made events.

pub mod anomaly;
pub mod authz;
pub mod changes;
pub mod integrity;
pub mod svid;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::{CheckResult, Exception, PolicyFact, Status};

/// Supporting sequence numbers kept per check.
pub const SAMPLE: usize = 10;
/// Exceptions kept per check (the count has them all).
pub const MAX_EXCEPTIONS: usize = 50;
/// Distinct keys (identities, pairs, SVID holders) a check tracks before it stops adding
/// and says its evidence is incomplete; bounds memory on any log.
pub const MAX_KEYS: usize = 200_000;
/// Edges drawn in the service graph.
pub const TOP_EDGES: usize = 20;

/// One stored event as the checks see it.
#[derive(Debug, Clone, Copy)]
pub struct Ev<'a> {
    pub seq: u64,
    pub time_ns: i64,
    pub kind: &'a str,
    pub actor: &'a str,
    pub subject: &'a str,
    pub action: &'a str,
    pub outcome: &'a str,
    pub reason: &'a str,
    pub node: &'a str,
    pub details: &'a str,
}

/// The fields of an `authz.decision` the checks read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Decision<'a> {
    #[serde(default)]
    pub dry_run: bool,
    #[serde(rename = "policy.hash", borrow, default)]
    pub policy_hash: Option<Cow<'a, str>>,
    #[serde(rename = "policy.set", borrow, default)]
    pub policy_set: Option<Cow<'a, str>>,
    #[serde(default)]
    pub policy_allowed: Option<bool>,
}

impl<'a> Decision<'a> {
    /// Unreadable details read as a decision with no policy: that is what they prove.
    pub fn parse(details: &'a str) -> Self {
        serde_json::from_str(details).unwrap_or_default()
    }
}

/// What the checks are computed against.
#[derive(Debug, Clone)]
pub struct Params {
    pub svid_max_ttl_secs: Option<u64>,
    pub clock_tolerance_ns: i64,
    pub checkpoint_every: u64,
    pub checkpoint_interval_ns: i64,
    pub spike_min_denials: u64,
    pub spike_factor: u64,
    /// New caller→service pairs seen within this many hours of the period's start are the
    /// baseline, not anomalies.
    pub baseline_hours: u64,
    pub policies: Vec<PolicyFact>,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            svid_max_ttl_secs: None,
            clock_tolerance_ns: 2 * crate::period::NS_PER_SEC,
            checkpoint_every: 10_000,
            checkpoint_interval_ns: 60 * crate::period::NS_PER_SEC,
            spike_min_denials: 50,
            spike_factor: 10,
            baseline_hours: 24,
            policies: Vec::new(),
        }
    }
}

/// Bounded sample + exceptions + counts: what every check builds up.
#[derive(Debug, Default)]
pub struct Tally {
    pub counts: BTreeMap<String, u64>,
    pub sample: Vec<u64>,
    pub exceptions: Vec<Exception>,
    pub exceptions_total: u64,
}

impl Tally {
    pub fn count(&mut self, what: &str) {
        self.add(what, 1);
    }

    pub fn add(&mut self, what: &str, n: u64) {
        if let Some(c) = self.counts.get_mut(what) {
            *c += n;
        } else {
            self.counts.insert(what.to_owned(), n);
        }
    }

    pub fn support(&mut self, seq: u64) {
        if self.sample.len() < SAMPLE {
            self.sample.push(seq);
        }
    }

    pub fn except(&mut self, seq: Option<u64>, message: impl Into<String>) {
        self.except_with(seq, || message.into());
    }

    /// As [`Tally::except`], writing the message only when it is kept: a check that finds
    /// an exception in every event (a clock set back, then every later event is early)
    /// would otherwise format millions of messages to keep fifty.
    pub fn except_with(&mut self, seq: Option<u64>, message: impl FnOnce() -> String) {
        self.exceptions_total += 1;
        if self.exceptions.len() < MAX_EXCEPTIONS {
            self.exceptions.push(Exception {
                seq,
                message: message(),
            });
        }
    }

    pub fn result(mut self, id: &str, status: Status) -> CheckResult {
        self.counts
            .insert("exceptions".into(), self.exceptions_total);
        CheckResult {
            id: id.to_owned(),
            description: describe(id).to_owned(),
            status,
            counts: self.counts,
            sample: self.sample,
            exceptions: self.exceptions,
        }
    }

    /// Failed with exceptions, else passed; not applicable when nothing was examined.
    pub fn judged(self, id: &str, examined: u64) -> CheckResult {
        let status = if self.exceptions_total > 0 {
            Status::Failed
        } else if examined == 0 {
            Status::NotApplicable
        } else {
            Status::Passed
        };
        self.result(id, status)
    }
}

/// Every check esm computes, with what it decides. Framework files name these ids.
pub const CATALOGUE: &[(&str, &str)] = &[
    (
        "svid.ttl_within_max",
        "Every SVID issued in the period lived no longer than the configured maximum.",
    ),
    (
        "svid.renewed_before_expiry",
        "Workloads got their next SVID before the previous one expired.",
    ),
    (
        "ca.key_custody",
        "The CA's signing keys are held in hardware or a managed key vault, not in files.",
    ),
    (
        "ca.rotation_healthy",
        "Every CA rotation step in the period succeeded.",
    ),
    (
        "authz.decided_by_policy",
        "Every request was decided by a loaded policy (policy hash recorded).",
    ),
    (
        "authz.deny_by_default",
        "Every policy in force denies what it does not explicitly grant.",
    ),
    (
        "authz.enforced",
        "Policies were enforced the whole period; dry-run periods are listed as exceptions.",
    ),
    (
        "authz.known_callers",
        "Every caller identity seen in decisions belongs to a registered entry.",
    ),
    (
        "change.attributed",
        "Every policy, entry and CA change names who made it and what it changed to (policy hash).",
    ),
    (
        "audit.chain_verifies",
        "The audit hash chain, Merkle roots and checkpoint signatures verify over the period.",
    ),
    (
        "audit.checkpoints_on_schedule",
        "Signed checkpoints covered every event within the configured count and interval.",
    ),
    (
        "audit.no_gaps",
        "No audit events were dropped (no audit.gap records).",
    ),
    (
        "anomaly.denial_spikes",
        "No hour had denials far above the period's baseline.",
    ),
    (
        "anomaly.new_pairs",
        "Caller→service pairs first seen after the baseline window, for a person to review.",
    ),
    (
        "clock.in_order",
        "Event times never went backwards by more than the tolerance.",
    ),
];

pub fn describe(id: &str) -> &'static str {
    CATALOGUE
        .iter()
        .find(|(i, _)| *i == id)
        .map_or("a check this esm does not know", |(_, d)| d)
}

/// Checks that are only as good as the log they read: all of them, since every check is
/// computed from the log. Named so a framework can say which controls depend on it.
pub const INTEGRITY_CHECK: &str = "audit.chain_verifies";

/// All accumulators, fed together in one pass.
pub struct Accumulators {
    pub svid: svid::SvidChecks,
    pub ca: changes::CaChecks,
    pub authz: authz::AuthzChecks,
    pub changes: changes::ChangeChecks,
    pub audit: integrity::AuditChecks,
    pub anomaly: anomaly::AnomalyChecks,
    pub clock: integrity::ClockCheck,
    pub activity: crate::activity::ActivityAcc,
}

impl Accumulators {
    pub fn new(params: &Params, period: crate::period::Period) -> Self {
        Self {
            svid: svid::SvidChecks::new(params.svid_max_ttl_secs),
            ca: changes::CaChecks::default(),
            authz: authz::AuthzChecks::new(&params.policies),
            changes: changes::ChangeChecks::default(),
            audit: integrity::AuditChecks::new(
                params.checkpoint_every,
                params.checkpoint_interval_ns,
            ),
            anomaly: anomaly::AnomalyChecks::new(params, period),
            clock: integrity::ClockCheck::new(params.clock_tolerance_ns),
            activity: crate::activity::ActivityAcc::default(),
        }
    }

    /// State from before the period (registered entries, the CA's key backend): what is
    /// in force when the period starts, with no finding of its own.
    pub fn prelude(&mut self, e: &Ev<'_>) {
        self.authz.prelude(e);
        self.ca.prelude(e);
    }

    /// One event of the period.
    pub fn observe(&mut self, e: &Ev<'_>) {
        self.clock.observe(e);
        self.audit.observe(e);
        self.activity.observe(e);
        match e.kind {
            esm_audit::kind::AUTHZ_DECISION => {
                let d = Decision::parse(e.details);
                self.authz.decision(e, &d);
                self.anomaly.decision(e);
            }
            esm_audit::kind::SVID_ISSUED | esm_audit::kind::SVID_ROTATED => self.svid.issued(e),
            _ => {
                self.authz.other(e);
                self.ca.observe(e);
                self.changes.observe(e);
            }
        }
    }

    /// Results by check id, ready to be grouped into controls.
    /// `end_ns`: the end of the period; `now_ns`: when the report is made.
    pub fn finish(
        self,
        params: &Params,
        end_ns: i64,
        now_ns: i64,
    ) -> (BTreeMap<String, CheckResult>, crate::model::Activity) {
        let activity = self.activity.finish(self.anomaly.top_edges(TOP_EDGES));
        let mut out = BTreeMap::new();
        let all = self
            .svid
            .finish(end_ns)
            .into_iter()
            .chain(self.ca.finish())
            .chain(self.authz.finish())
            .chain(std::iter::once(self.changes.finish()))
            .chain(self.audit.finish(now_ns))
            .chain(self.anomaly.finish(params))
            .chain(std::iter::once(self.clock.finish()));
        for r in all {
            out.insert(r.id.clone(), r);
        }
        (out, activity)
    }
}

#[cfg(test)]
pub(crate) mod test_events {
    use super::Ev;

    /// An event of `kind` at second `t` with sequence number `seq`.
    pub fn ev<'a>(seq: u64, t: i64, kind: &'a str, details: &'a str) -> Ev<'a> {
        Ev {
            seq,
            time_ns: t * crate::period::NS_PER_SEC,
            kind,
            actor: "",
            subject: "",
            action: "",
            outcome: "success",
            reason: "",
            node: "",
            details,
        }
    }
}
