//! The services' families for `/metrics` (audit writer, ext_authz, agent, SIGHUP config
//! reloads), read from the atomics and histogram handles each library keeps; wired in
//! [`crate::metrics`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;

use esm_audit::writer::Metrics as AuditMetrics;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use time::OffsetDateTime;

use crate::metrics::{family, n, one, Labels, Value};

#[derive(Debug)]
pub(crate) struct Audit(pub(crate) Arc<AuditMetrics>);

impl Collector for Audit {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        audit(&mut enc, &self.0, OffsetDateTime::now_utc())
    }
}

/// The audit writer's families: a growing `dropped` or `failed_batches` is lost or late
/// evidence; queue depth, commit latency and checkpoint age say how close that is.
fn audit(
    enc: &mut DescriptorEncoder<'_>,
    a: &AuditMetrics,
    now: OffsetDateTime,
) -> std::fmt::Result {
    use MetricType::{Counter, Gauge, Histogram};
    for (name, help, v) in [
        ("esm_audit_events_appended", "Audit events committed.", &a.appended),
        ("esm_audit_events_dropped", "Audit events dropped because the queue was full.", &a.dropped),
        ("esm_audit_batches", "Audit transactions committed.", &a.batches),
        (
            "esm_audit_batches_failed",
            "Audit transactions the store refused (each attempt); the batch is retried.",
            &a.failed_batches,
        ),
        (
            "esm_audit_batches_retried",
            "Audit transactions committed after the store had refused them.",
            &a.retried_batches,
        ),
        (
            "esm_audit_events_abandoned",
            "Audit events given up: the store still refused them at shutdown.",
            &a.abandoned,
        ),
        ("esm_audit_checkpoints", "Signed checkpoints written.", &a.checkpoints),
        (
            "esm_audit_checkpoints_failed",
            "Checkpoints the audit key could not sign (its HSM or vault failed); the events were stored and a later checkpoint covers them.",
            &a.checkpoint_failures,
        ),
    ] {
        family(enc, name, help, Counter, one(n(v)))?;
    }
    family(
        enc,
        "esm_audit_store_up",
        "1 while the audit store takes writes, 0 while it refuses them (not ready).",
        Gauge,
        one(Value::U(u64::from(!a.store_failing.load(Relaxed)))),
    )?;
    family(
        enc,
        "esm_audit_last_seq",
        "Sequence number of the newest committed audit event.",
        Gauge,
        one(n(&a.last_seq)),
    )?;
    family(
        enc,
        "esm_audit_commit_latency_seconds",
        "Time of each audit transaction the store took (begin to commit, a checkpoint included).",
        Histogram,
        one(Value::H(a.commit_latency.snapshot())),
    )?;
    if let Some((depth, capacity)) = a.queue_depth() {
        family(
            enc,
            "esm_audit_queue_depth",
            "Audit events queued for the writer and not yet taken.",
            Gauge,
            one(Value::U(depth as u64)),
        )?;
        family(
            enc,
            "esm_audit_queue_capacity",
            "Audit events the queue holds before it blocks or drops (audit.on_full).",
            Gauge,
            one(Value::U(capacity as u64)),
        )?;
    }
    checkpoint_age(enc, &a.last_checkpoint_ns, now)
}

/// The newest checkpoint's time and age: events after it are chained but not signed.
/// Declared without a sample until the store has a checkpoint.
fn checkpoint_age(
    enc: &mut DescriptorEncoder<'_>,
    ns: &AtomicI64,
    now: OffsetDateTime,
) -> std::fmt::Result {
    let ns = ns.load(Relaxed);
    let some = |v: f64| {
        if ns == 0 {
            Vec::new()
        } else {
            one(Value::F(v))
        }
    };
    family(
        enc,
        "esm_audit_last_checkpoint_timestamp_seconds",
        "When the newest signed checkpoint was made.",
        MetricType::Gauge,
        some(ns as f64 / 1e9),
    )?;
    let age = (now.unix_timestamp_nanos() - i128::from(ns)) as f64 / 1e9;
    family(
        enc,
        "esm_audit_checkpoint_age_seconds",
        "Time since the newest signed checkpoint was made.",
        MetricType::Gauge,
        some(age),
    )
}

#[derive(Debug)]
pub(crate) struct Authz(pub(crate) Arc<esm_authz::service::Metrics>);

impl Collector for Authz {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        authz(&mut enc, &self.0)
    }
}

fn result(r: &str) -> Labels {
    vec![("result", r.to_owned())]
}

/// ext_authz decisions by result (`fail_closed`: denials the policy did not make), their
/// latency by policy set, and each set's reloads.
fn authz(enc: &mut DescriptorEncoder<'_>, a: &esm_authz::service::Metrics) -> std::fmt::Result {
    use MetricType::{Counter, Histogram};
    let decisions = vec![
        (result("allow"), n(&a.allowed)),
        (result("deny"), n(&a.denied)),
        (result("fail_closed"), n(&a.failed_closed)),
        (result("audit_refused"), n(&a.audit_refused)),
    ];
    family(
        enc,
        "esm_authz_decisions",
        "ext_authz decisions.",
        Counter,
        decisions,
    )?;
    family(
        enc,
        "esm_authz_dry_run_would_deny",
        "Dry-run requests the policy would have denied.",
        Counter,
        one(n(&a.dry_run_would_deny)),
    )?;
    family(
        enc,
        "esm_authz_decision_seconds",
        "Time spent building inputs and evaluating.",
        Counter,
        one(Value::F(a.eval_nanos.load(Relaxed) as f64 / 1e9)),
    )?;
    family(
        enc,
        "esm_authz_memoized",
        "Decisions answered from the decision memo instead of a fresh evaluation.",
        Counter,
        one(n(&a.memoized)),
    )?;
    let engines = vec![
        (vec![("engine", "rvm".to_owned())], n(&a.evaluated_rvm)),
        (
            vec![("engine", "interpreter".to_owned())],
            n(&a.evaluated_interpreter),
        ),
    ];
    family(
        enc,
        "esm_authz_evaluations",
        "Fresh evaluations by engine: regorus' bytecode VM, or its interpreter for a policy set the VM does not run.",
        Counter,
        engines,
    )?;
    family(
        enc,
        "esm_authz_rvm_rechecked",
        "Bytecode VM answers (undefined, or a VM error) evaluated again by the interpreter, whose answer counts.",
        Counter,
        one(Value::U(esm_authz::engine::rechecked_total())),
    )?;
    let latency = a
        .latencies()
        .iter()
        .flat_map(|(set, l)| {
            l.by_result().map(|(r, h)| {
                let labels = vec![("policy_set", set.to_string()), ("result", r.to_owned())];
                (labels, Value::H(h.snapshot()))
            })
        })
        .collect();
    family(
        enc,
        "esm_authz_decision_latency_seconds",
        "Time from a Check's arrival to its answer (the record's commit included in sync decision-log mode), by policy set (\"\" for a set not served) and result.",
        Histogram,
        latency,
    )?;
    let reloads = esm_authz::reload_counts::counts()
        .into_iter()
        .flat_map(|c| {
            [("accepted", c.accepted), ("refused", c.refused)].map(|(r, v)| {
                let labels = vec![("policy_set", c.set.clone()), ("result", r.to_owned())];
                (labels, Value::U(v))
            })
        })
        .collect();
    family(
        enc,
        "esm_authz_policy_reloads",
        "New versions of a policy set that hot reload accepted, or refused (the old one keeps serving).",
        Counter,
        reloads,
    )?;
    bundles(enc)
}

/// The version each set serves (its hash and bundle revision), and each bundle server's
/// polls: a stale last success means a set serves an old revision.
fn bundles(enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    use MetricType::{Counter, Gauge};
    let serving = esm_authz::reload_counts::serving_now()
        .into_iter()
        .map(|(set, hash, revision)| {
            let labels = vec![
                ("policy_set", set),
                ("policy_hash", hash),
                ("revision", revision),
            ];
            (labels, Value::U(1))
        })
        .collect();
    family(
        enc,
        "esm_authz_policy_info",
        "The version of each policy set serving: its hash and its bundle's manifest revision (empty for a directory).",
        Gauge,
        serving,
    )?;
    let counts = esm_authz::bundle_service::counts();
    let polls = counts
        .iter()
        .flat_map(|c| {
            [
                ("new", c.new),
                ("not_modified", c.not_modified),
                ("refused", c.refused),
                ("failed", c.failed),
            ]
            .map(|(r, v)| {
                let labels = vec![("policy_set", c.set.clone()), ("result", r.to_owned())];
                (labels, Value::U(v))
            })
        })
        .collect();
    family(
        enc,
        "esm_authz_bundle_polls",
        "Polls of a set's bundle server: a new bundle taken, not modified (304), a bundle refused (signature, compile, tests), or failed (unreachable, an HTTP error).",
        Counter,
        polls,
    )?;
    let last = counts
        .iter()
        .map(|c| {
            let labels = vec![("policy_set", c.set.clone())];
            (labels, Value::U(c.last_success_unix))
        })
        .collect();
    family(
        enc,
        "esm_authz_bundle_last_success_timestamp_seconds",
        "Unix time of the last poll that reached a set's bundle server (0: none yet).",
        Gauge,
        last,
    )
}

#[derive(Debug)]
pub(crate) struct Agent(pub(crate) Arc<esm_agent::context::AgentMetrics>);

impl Collector for Agent {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        agent(&mut enc, &self.0)
    }
}

/// The agent socket: open SDS / Workload API streams, what they were sent and refused, and
/// how long a CA change takes to reach them.
fn agent(
    enc: &mut DescriptorEncoder<'_>,
    a: &esm_agent::context::AgentMetrics,
) -> std::fmt::Result {
    use MetricType::{Counter, Gauge, Histogram};
    family(
        enc,
        "esm_agent_open_streams",
        "Open SDS streams.",
        Gauge,
        one(n(&a.open_streams)),
    )?;
    family(
        enc,
        "esm_agent_streams_refused",
        "Agent socket calls refused because their uid held its stream budget.",
        Counter,
        one(n(&a.streams_refused)),
    )?;
    family(
        enc,
        "esm_agent_svids_issued",
        "SVIDs issued over SDS and the Workload API.",
        Counter,
        one(n(&a.svids_issued)),
    )?;
    family(
        enc,
        "esm_agent_issuance_failures",
        "SVID issuances that failed on the CA's side (key backend, expired signing CA); retried, no workload refused.",
        Counter,
        one(n(&a.issuance_failures)),
    )?;
    let responses = vec![
        (result("sent"), n(&a.responses)),
        (result("nack"), n(&a.nacks)),
        (result("refused"), n(&a.refused)),
    ];
    family(
        enc,
        "esm_agent_responses",
        "SDS responses by outcome.",
        Counter,
        responses,
    )?;
    family(
        enc,
        "esm_agent_sds_push_after_ca_change_seconds",
        "From an SDS stream seeing a CA change to the response that carries it.",
        Histogram,
        one(Value::H(a.sds_push_after_ca_change.snapshot())),
    )
}

/// What SIGHUPs did to esm.toml, counted by the reloader (`commands/serve_reload.rs`)
/// for `esm_config_reloads_total`. Process-wide, as the policy reloads' counts are: the
/// reloader lives with the signal handler, the exposition with the admin server.
#[derive(Debug)]
pub(crate) struct ConfigReloadCounts {
    /// A changed esm.toml that parsed, and whose changed policy sets compiled and passed.
    pub(crate) applied: AtomicU64,
    /// esm.toml as in force: only the policies were re-read.
    pub(crate) unchanged: AtomicU64,
    /// A config refused as a whole (unreadable, invalid, a set that fails): the old stays.
    pub(crate) refused: AtomicU64,
}

pub(crate) static CONFIG_RELOADS: ConfigReloadCounts = ConfigReloadCounts {
    applied: AtomicU64::new(0),
    unchanged: AtomicU64::new(0),
    refused: AtomicU64::new(0),
};

#[derive(Debug)]
pub(crate) struct ConfigReloads;

impl Collector for ConfigReloads {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        config_reloads(&mut enc, &CONFIG_RELOADS)
    }
}

/// SIGHUPs by result: a `refused` one means esm.toml on disk is not what serves.
fn config_reloads(enc: &mut DescriptorEncoder<'_>, c: &ConfigReloadCounts) -> std::fmt::Result {
    let by_result = vec![
        (result("applied"), n(&c.applied)),
        (result("unchanged"), n(&c.unchanged)),
        (result("refused"), n(&c.refused)),
    ];
    family(
        enc,
        "esm_config_reloads",
        "esm.toml reloads on SIGHUP: applied (changed and valid), unchanged (only the policies re-read), or refused (the config in force stays).",
        MetricType::Counter,
        by_result,
    )
}
