//! The admin HTTP endpoints: `/healthz` (the process runs), `/readyz` (it can sign now) and
//! `/metrics` (Prometheus text format, see [`crate::metrics`]).

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use esm_audit::writer::Metrics as AuditMetrics;
use esm_ca::material::CaMaterial;
use esm_ca::state::CaState;
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
    let registry = Arc::new(crate::metrics::registry(ca, audit, authz, agent));
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
                let body = crate::metrics::encode(&registry);
                async move { ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body) }
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
