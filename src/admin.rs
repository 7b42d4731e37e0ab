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

#[cfg(test)]
mod tests {
    use esm_ca::key_backend::KeyAlgorithm;
    use esm_ca::state::{Authority, AuthorityKind, CaState, Status, STATE_VERSION};
    use time::Duration;

    use super::*;

    fn state(intermediate: Option<(Status, OffsetDateTime, OffsetDateTime)>) -> CaState {
        let authority = |id: &str, kind, status, not_before, not_after| Authority {
            id: id.into(),
            kind,
            status,
            parent: None,
            key_backend: "file".into(),
            key_id: id.into(),
            algorithm: KeyAlgorithm::EcP256,
            cert_pem: String::new(),
            not_before,
            not_after,
            activated_at: None,
            retired_at: None,
            upstream: false,
        };
        let now = OffsetDateTime::now_utc();
        let mut authorities = vec![authority(
            "root",
            AuthorityKind::Root,
            Status::Active,
            now - Duration::days(1),
            now + Duration::days(365),
        )];
        if let Some((status, not_before, not_after)) = intermediate {
            authorities.push(authority(
                "int",
                AuthorityKind::Intermediate,
                status,
                not_before,
                not_after,
            ));
        }
        CaState {
            version: STATE_VERSION,
            trust_domain: "example.org".into(),
            algorithm: KeyAlgorithm::EcP256,
            bundle_sequence: 1,
            authorities,
            published: vec!["root".into()],
        }
    }

    #[test]
    fn ready_only_while_the_active_signing_ca_is_valid_now() {
        let now = OffsetDateTime::now_utc();
        let day = Duration::days(1);
        let valid = state(Some((Status::Active, now - day, now + day)));
        assert_eq!(readiness(&valid, now).0, StatusCode::OK);
        let expired = state(Some((Status::Active, now - 2 * day, now - day)));
        assert_eq!(readiness(&expired, now).0, StatusCode::SERVICE_UNAVAILABLE);
        let not_yet = state(Some((Status::Active, now + day, now + 2 * day)));
        assert_eq!(readiness(&not_yet, now).0, StatusCode::SERVICE_UNAVAILABLE);
        // Prepared is published, not signing: nothing can be issued yet.
        let prepared = state(Some((Status::Prepared, now - day, now + day)));
        assert_eq!(readiness(&prepared, now).0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            readiness(&state(None), now).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
