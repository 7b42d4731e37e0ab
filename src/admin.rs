//! The admin HTTP endpoints: `/healthz` (the process runs), `/readyz` (it can sign now) and
//! `/metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use esm_audit::writer::Metrics as AuditMetrics;
use esm_ca::state::{CaState, Status};
use time::OffsetDateTime;
use tokio::sync::watch;

pub fn router(
    ca: watch::Receiver<Arc<CaState>>,
    audit: Arc<AuditMetrics>,
    authz: Arc<esm_authz::service::Metrics>,
) -> Router {
    let ready = ca.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let state = ready.borrow().clone();
                async move { readiness(&state, OffsetDateTime::now_utc()) }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let state = ca.borrow().clone();
                let (audit, authz) = (audit.clone(), authz.clone());
                async move {
                    let mut m = metrics(&state, OffsetDateTime::now_utc());
                    audit_metrics(&mut m, &audit);
                    authz_metrics(&mut m, &authz);
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
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in samples {
            let _ = writeln!(m, "{name}{labels} {v}");
        }
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

/// The audit writer's counters: a growing `dropped` or `failed_batches` is lost evidence.
pub fn audit_metrics(m: &mut String, a: &AuditMetrics) {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = [
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
            "Audit transactions that failed; their events were not acknowledged.",
            &a.failed_batches,
        ),
        (
            "esm_audit_checkpoints_total",
            "Signed checkpoints written.",
            &a.checkpoints,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            m,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            v.load(Relaxed)
        );
    }
    let _ = writeln!(
        m,
        "# HELP esm_audit_last_seq Sequence number of the newest committed audit event.\n# TYPE esm_audit_last_seq gauge\nesm_audit_last_seq {}",
        a.last_seq.load(Relaxed)
    );
}

/// ext_authz decisions by result; `failed_closed` counts denials the policy did not make.
pub fn authz_metrics(m: &mut String, a: &esm_authz::service::Metrics) {
    use std::sync::atomic::Ordering::Relaxed;
    let _ = writeln!(
        m,
        "# HELP esm_authz_decisions_total ext_authz decisions.\n# TYPE esm_authz_decisions_total counter"
    );
    for (result, v) in [
        ("allow", &a.allowed),
        ("deny", &a.denied),
        ("fail_closed", &a.failed_closed),
        ("audit_refused", &a.audit_refused),
    ] {
        let _ = writeln!(
            m,
            "esm_authz_decisions_total{{result=\"{result}\"}} {}",
            v.load(Relaxed)
        );
    }
    let _ = writeln!(
        m,
        "# HELP esm_authz_dry_run_would_deny_total Dry-run requests the policy would have denied.\n# TYPE esm_authz_dry_run_would_deny_total counter\nesm_authz_dry_run_would_deny_total {}",
        a.dry_run_would_deny.load(Relaxed)
    );
    let _ = writeln!(
        m,
        "# HELP esm_authz_decision_seconds_total Time spent building inputs and evaluating.\n# TYPE esm_authz_decision_seconds_total counter\nesm_authz_decision_seconds_total {}",
        a.eval_nanos.load(Relaxed) as f64 / 1e9
    );
}
