//! The admin HTTP endpoints: `/healthz` (the process runs), `/readyz` (it can sign now) and
//! `/metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use esm_audit::writer::Metrics as AuditMetrics;
use esm_ca::material::CaMaterial;
use esm_ca::state::{CaState, Status};
use time::OffsetDateTime;
use tokio::sync::watch;

pub fn router(
    ca: watch::Receiver<Arc<CaMaterial>>,
    audit: Arc<AuditMetrics>,
    authz: Arc<esm_authz::service::Metrics>,
    agent: Arc<esm_agent::context::AgentMetrics>,
) -> Router {
    let ready = ca.clone();
    let store = audit.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let state = ready.borrow().clone();
                let store_failing = store
                    .store_failing
                    .load(std::sync::atomic::Ordering::Relaxed);
                async move {
                    match readiness(&state.state, OffsetDateTime::now_utc()) {
                        ok if ok.0 == StatusCode::OK && store_failing => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the audit store refuses writes\n".into(),
                        ),
                        other => other,
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let state = ca.borrow().clone();
                let (audit, authz, agent) = (audit.clone(), authz.clone(), agent.clone());
                async move {
                    let mut m = metrics(&state.state, OffsetDateTime::now_utc());
                    audit_metrics(&mut m, &audit);
                    authz_metrics(&mut m, &authz);
                    agent_metrics(&mut m, &agent);
                    listener_metrics(&mut m, &esm_listener::snapshots());
                    m
                }
            }),
        )
}

/// Ready while the active signing CA is valid: otherwise nothing esm issues would verify.
pub fn readiness(state: &CaState, now: OffsetDateTime) -> (StatusCode, String) {
    match state.active_intermediate() {
        Some(int) if int.not_after > now && int.not_before <= now => {
            (StatusCode::OK, "ready\n".into())
        }
        Some(int) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("signing CA {} is not valid now\n", int.id),
        ),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no signing CA\n".into()),
    }
}

pub fn metrics(state: &CaState, now: OffsetDateTime) -> String {
    let mut m = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(&str, f64)]| {
        family(&mut m, name, "gauge", help, samples)
    };
    let version = format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    gauge("esm_build_info", "esm build.", &[(&version, 1.0)]);
    if let Some(int) = state.active_intermediate() {
        gauge(
            "esm_ca_signing_ca_expiry_timestamp_seconds",
            "When the active signing CA expires.",
            &[("", int.not_after.unix_timestamp() as f64)],
        );
    }
    if let Some(root) = state.active_root() {
        gauge(
            "esm_ca_root_expiry_timestamp_seconds",
            "When the active root expires.",
            &[("", root.not_after.unix_timestamp() as f64)],
        );
    }
    gauge(
        "esm_ca_bundle_sequence",
        "Sequence number of the trust bundle.",
        &[("", state.bundle_sequence as f64)],
    );
    gauge(
        "esm_ca_bundle_roots",
        "Roots published in the trust bundle.",
        &[("", state.published_roots(now).len() as f64)],
    );
    let count = |s: Status| state.authorities.iter().filter(|a| a.status == s).count() as f64;
    gauge(
        "esm_ca_authorities",
        "Roots and intermediates by status.",
        &[
            ("{status=\"prepared\"}", count(Status::Prepared)),
            ("{status=\"active\"}", count(Status::Active)),
            ("{status=\"retired\"}", count(Status::Retired)),
        ],
    );
    m
}

/// One Prometheus metric family in the text format: HELP, TYPE and its samples.
fn family(m: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
    let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(m, "{name}{labels} {v}");
    }
}

/// The audit writer's counters: a growing `dropped` or `failed_batches` is lost evidence.
pub fn audit_metrics(m: &mut String, a: &AuditMetrics) {
    use std::sync::atomic::Ordering::Relaxed;
    let counter = |v: &std::sync::atomic::AtomicU64| [("", v.load(Relaxed) as f64)];
    for (name, help, v) in [
        (
            "esm_audit_events_appended_total",
            "Audit events committed.",
            &a.appended,
        ),
        (
            "esm_audit_events_dropped_total",
            "Audit events dropped because the queue was full.",
            &a.dropped,
        ),
        (
            "esm_audit_batches_total",
            "Audit transactions committed.",
            &a.batches,
        ),
        (
            "esm_audit_batches_failed_total",
            "Audit transactions the store refused (each attempt); the batch is retried.",
            &a.failed_batches,
        ),
        (
            "esm_audit_batches_retried_total",
            "Audit transactions committed after the store had refused them.",
            &a.retried_batches,
        ),
        (
            "esm_audit_events_abandoned_total",
            "Audit events given up: the store still refused them at shutdown.",
            &a.abandoned,
        ),
        (
            "esm_audit_checkpoints_total",
            "Signed checkpoints written.",
            &a.checkpoints,
        ),
        (
            "esm_audit_checkpoints_failed_total",
            "Checkpoints the audit key could not sign (its HSM or vault failed); the events were stored and a later checkpoint covers them.",
            &a.checkpoint_failures,
        ),
    ] {
        family(m, name, "counter", help, &counter(v));
    }
    family(
        m,
        "esm_audit_store_up",
        "gauge",
        "1 while the audit store takes writes, 0 while it refuses them (not ready).",
        &[("", f64::from(u8::from(!a.store_failing.load(Relaxed))))],
    );
    family(
        m,
        "esm_audit_last_seq",
        "gauge",
        "Sequence number of the newest committed audit event.",
        &counter(&a.last_seq),
    );
}

/// ext_authz decisions by result; `failed_closed` counts denials the policy did not make.
pub fn authz_metrics(m: &mut String, a: &esm_authz::service::Metrics) {
    use std::sync::atomic::Ordering::Relaxed;
    let n = |v: &std::sync::atomic::AtomicU64| v.load(Relaxed) as f64;
    family(
        m,
        "esm_authz_decisions_total",
        "counter",
        "ext_authz decisions.",
        &[
            ("{result=\"allow\"}", n(&a.allowed)),
            ("{result=\"deny\"}", n(&a.denied)),
            ("{result=\"fail_closed\"}", n(&a.failed_closed)),
            ("{result=\"audit_refused\"}", n(&a.audit_refused)),
        ],
    );
    family(
        m,
        "esm_authz_dry_run_would_deny_total",
        "counter",
        "Dry-run requests the policy would have denied.",
        &[("", n(&a.dry_run_would_deny))],
    );
    family(
        m,
        "esm_authz_decision_seconds_total",
        "counter",
        "Time spent building inputs and evaluating.",
        &[("", n(&a.eval_nanos) / 1e9)],
    );
    family(
        m,
        "esm_authz_memoized_total",
        "counter",
        "Decisions answered from the decision memo instead of a fresh evaluation.",
        &[("", n(&a.memoized))],
    );
    family(
        m,
        "esm_authz_evaluations_total",
        "counter",
        "Fresh evaluations by engine: regorus' bytecode VM, or its interpreter for a policy set the VM does not run.",
        &[
            ("{engine=\"rvm\"}", n(&a.evaluated_rvm)),
            ("{engine=\"interpreter\"}", n(&a.evaluated_interpreter)),
        ],
    );
    family(
        m,
        "esm_authz_rvm_rechecked_total",
        "counter",
        "Bytecode VM answers (undefined, or a VM error) evaluated again by the interpreter, whose answer counts.",
        &[("", esm_authz::engine::rechecked_total() as f64)],
    );
}

/// The bounded listeners (ext_authz, admin): connections held, refused at a limit, and
/// closed for sending too little too slowly.
pub fn listener_metrics(m: &mut String, all: &[(&str, esm_listener::Snapshot)]) {
    let by = |f: fn(&esm_listener::Snapshot) -> u64| -> Vec<(String, f64)> {
        all.iter()
            .map(|(name, s)| (format!("{{listener=\"{name}\"}}"), f(s) as f64))
            .collect()
    };
    let open = by(|s| s.open);
    family(
        m,
        "esm_listener_connections",
        "gauge",
        "Connections held.",
        &samples(&open),
    );
    let accepted = by(|s| s.accepted);
    family(
        m,
        "esm_listener_accepted_total",
        "counter",
        "Connections accepted within the limits.",
        &samples(&accepted),
    );
    let stalled = by(|s| s.stalled);
    family(
        m,
        "esm_listener_stalled_total",
        "counter",
        "Connections closed because their first bytes did not arrive in time.",
        &samples(&stalled),
    );
    let refused: Vec<(String, f64)> = all
        .iter()
        .flat_map(|(name, s)| {
            [
                (
                    format!("{{listener=\"{name}\",limit=\"listener\"}}"),
                    s.refused_listener_full as f64,
                ),
                (
                    format!("{{listener=\"{name}\",limit=\"peer\"}}"),
                    s.refused_peer_full as f64,
                ),
            ]
        })
        .collect();
    family(
        m,
        "esm_listener_refused_total",
        "counter",
        "Connections closed at once because the listener or their peer held too many.",
        &samples(&refused),
    );
}

fn samples(v: &[(String, f64)]) -> Vec<(&str, f64)> {
    v.iter().map(|(l, n)| (l.as_str(), *n)).collect()
}

/// The agent socket: open SDS / Workload API streams, what they were sent and refused.
pub fn agent_metrics(m: &mut String, a: &esm_agent::context::AgentMetrics) {
    use std::sync::atomic::Ordering::Relaxed;
    let n = |v: &std::sync::atomic::AtomicU64| v.load(Relaxed) as f64;
    family(
        m,
        "esm_agent_open_streams",
        "gauge",
        "Open SDS streams.",
        &[("", n(&a.open_streams))],
    );
    family(
        m,
        "esm_agent_svids_issued_total",
        "counter",
        "SVIDs issued over SDS and the Workload API.",
        &[("", n(&a.svids_issued))],
    );
    family(
        m,
        "esm_agent_issuance_failures_total",
        "counter",
        "SVID issuances that failed on the CA's side (key backend, expired signing CA); retried, no workload refused.",
        &[("", n(&a.issuance_failures))],
    );
    family(
        m,
        "esm_agent_responses_total",
        "counter",
        "SDS responses by outcome.",
        &[
            ("{result=\"sent\"}", n(&a.responses)),
            ("{result=\"nack\"}", n(&a.nacks)),
            ("{result=\"refused\"}", n(&a.refused)),
        ],
    );
}
