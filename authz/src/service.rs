//! The thin gRPC layer: `envoy.service.auth.v3.Authorization/Check` and grpc.health.v1 on
//! one listener. Each request reads the current policy set from a `watch` channel (swapped
//! atomically on reload), calls [`check`], and queues an `authz.decision` audit event
//! without waiting for the disk.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use esm_audit::writer::AuditSink;
use esm_audit::{kind, Event, Outcome};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::check::{check, CheckOptions, Checked};
use crate::policy_set::PolicySet;

/// Envoy sends at most the configured body (`max_request_bytes`); this bounds what a hostile
/// client can make the server decode.
pub const MAX_MESSAGE: usize = 16 << 20;

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    /// Denied because the policy could not decide (input, evaluation, undefined, result).
    pub failed_closed: AtomicU64,
    /// Dry-run requests the policy would have denied.
    pub dry_run_would_deny: AtomicU64,
    /// Denied because the audit queue was full and the store fails closed.
    pub audit_refused: AtomicU64,
    pub eval_nanos: AtomicU64,
}

#[derive(Clone)]
pub struct AuthzService {
    policies: watch::Receiver<Arc<PolicySet>>,
    opts: CheckOptions,
    audit: Option<AuditSink>,
    metrics: Arc<Metrics>,
}

fn header<'a>(req: &'a CheckRequest, name: &str) -> &'a str {
    req.attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .and_then(|h| h.headers.get(name))
        .map_or("", String::as_str)
}

/// The audit record of one decision: who (source SPIFFE ID or address), what (method and
/// path, or `connect` for the network filter), outcome, and why.
pub fn decision_event(req: &CheckRequest, c: &Checked, set: &PolicySet, dry_run: bool) -> Event {
    let attrs = req.attributes.as_ref();
    let peer_name =
        |p: Option<&envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer>| {
            p.map(|p| {
                if p.principal.is_empty() {
                    match p.address.as_ref().and_then(|a| a.address.as_ref()) {
                    Some(
                        envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(
                            s,
                        ),
                    ) => s.address.clone(),
                    _ => String::new(),
                }
                } else {
                    p.principal.clone()
                }
            })
            .unwrap_or_default()
        };
    let http = attrs
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let outcome = if c.decision.allowed {
        Outcome::Allow
    } else {
        Outcome::Deny
    };
    let mut e = Event::new(kind::AUTHZ_DECISION, outcome);
    e.actor = peer_name(attrs.and_then(|a| a.source.as_ref()));
    e.subject = peer_name(attrs.and_then(|a| a.destination.as_ref()));
    e.action = http.map_or_else(|| "connect".into(), |h| format!("{} {}", h.method, h.host));
    e.correlation_id = header(req, "x-request-id").to_owned();
    if let Some((f, reason)) = &c.failure {
        e.reason = format!("fail closed ({}): {reason}", f.as_str());
    } else if dry_run && !c.policy_allowed {
        e.reason = "dry-run: the policy would deny".into();
    }
    e.details = serde_json::json!({
        "policy.hash": set.hash,
        "policy.rule": set.rule,
        "path": http.map(|h| h.path.split('?').next().unwrap_or_default().to_owned()),
        "status": (!c.decision.allowed).then_some(c.decision.http_status),
        "dry_run": dry_run,
        "policy_allowed": c.policy_allowed,
    });
    e
}

impl AuthzService {
    pub fn new(
        policies: watch::Receiver<Arc<PolicySet>>,
        opts: CheckOptions,
        audit: Option<AuditSink>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            policies,
            opts,
            audit,
            metrics,
        }
    }

    /// Decides `req` and records it; pure apart from the counters and the audit queue.
    pub fn decide(&self, req: &CheckRequest) -> CheckResponse {
        let set = self.policies.borrow().clone();
        let started = Instant::now();
        let mut c = check(&set, req, &self.opts);
        self.metrics
            .eval_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if let Some(sink) = &self.audit {
            let event = decision_event(req, &c, &set, self.opts.dry_run);
            if let Err(e) = sink.try_append(event) {
                if matches!(e, esm_audit::Error::QueueFull) && sink.fails_closed() {
                    // Evidence cannot be kept: deny rather than let an unrecorded request in.
                    self.metrics.audit_refused.fetch_add(1, Ordering::Relaxed);
                    c.decision = crate::decision::Decision {
                        allowed: false,
                        http_status: Some(503),
                        ..Default::default()
                    };
                }
                tracing::warn!(error = %e, "authz decision not recorded");
            }
        }
        let m = &self.metrics;
        match (&c.failure, c.decision.allowed) {
            (Some(_), _) => m.failed_closed.fetch_add(1, Ordering::Relaxed),
            (None, true) => m.allowed.fetch_add(1, Ordering::Relaxed),
            (None, false) => m.denied.fetch_add(1, Ordering::Relaxed),
        };
        if self.opts.dry_run && !c.policy_allowed {
            m.dry_run_would_deny.fetch_add(1, Ordering::Relaxed);
        }
        if let Some((f, reason)) = &c.failure {
            tracing::warn!(decision = "deny", failure = f.as_str(), reason = %reason, policy.hash = %set.hash, "authz failed closed");
        } else {
            tracing::debug!(decision = if c.decision.allowed { "allow" } else { "deny" }, policy.hash = %set.hash, "authz decision");
        }
        let id = header(req, "x-request-id");
        crate::response::check_response(&c.decision, id)
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.decide(request.get_ref())))
    }
}

/// Serves Check and grpc.health.v1 on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: AuthzService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<AuthorizationServer<AuthzService>>()
        .await;
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(authz.listen = ?addr, "ext_authz serving");
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(AuthorizationServer::new(service).max_decoding_message_size(MAX_MESSAGE))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
}
