//! The thin gRPC layer: `envoy.service.auth.v3.Authorization/Check` and grpc.health.v1 on
//! one listener. Each request reads the current policy set from a `watch` channel (swapped
//! atomically on reload), calls [`check`], and queues an `authz.decision` audit event:
//! without waiting for the disk (`async`), or answering only once the record is committed
//! (`sync`, [`DecisionLogMode`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use esm_audit::writer::{AuditSink, Receipt};
use esm_audit::{kind, Event, Outcome};
use esm_listener::{Accept, GuardedListener, Limits};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::check::{check, CheckOptions, Checked, Failure};
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
    /// Denied because the decision could not be recorded: the audit queue was full and the
    /// store fails closed, or (`sync`) its record was not committed.
    pub audit_refused: AtomicU64,
    pub eval_nanos: AtomicU64,
    /// Decisions answered from a set's decision memo.
    pub memoized: AtomicU64,
}

/// Which decisions go to the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecisionLog {
    /// Every decision: the evidence that each request was checked.
    #[default]
    All,
    /// Denials, fail-closed denials and dry-run would-be denials only: less volume at sites
    /// where allowed traffic is proven by other means.
    Denied,
    /// None (policy changes and SVIDs are still recorded).
    Off,
}

impl DecisionLog {
    pub fn records(self, c: &Checked, dry_run: bool) -> bool {
        match self {
            Self::All => true,
            Self::Denied => {
                !c.decision.allowed || c.failure.is_some() || (dry_run && !c.policy_allowed)
            }
            Self::Off => false,
        }
    }
}

/// When a decision's audit record must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecisionLogMode {
    /// Answer at once; the record is committed in the next group (within the linger). A
    /// crash can lose the records still queued: the decisions were answered, the evidence of
    /// the last few milliseconds is gone.
    #[default]
    Async,
    /// Answer only after the record is committed; a record that cannot be committed denies
    /// (503), as Vault's audit devices do. Concurrent Checks share one commit (group
    /// commit), so the cost is latency — about one fsync — more than throughput.
    Sync,
}

/// One policy set as the service sees it: the current compiled set and its dry-run switch.
#[derive(Clone)]
pub struct ServedSet {
    pub name: String,
    pub dry_run: bool,
    pub policies: watch::Receiver<Arc<PolicySet>>,
}

/// The `context_extensions` key an Envoy route sets to pick a policy set
/// (`typed_per_filter_config` → `check_settings.context_extensions`).
pub const SET_KEY: &str = "policy_set";

#[derive(Clone)]
pub struct AuthzService {
    sets: Arc<Vec<ServedSet>>,
    opts: CheckOptions,
    audit: Option<AuditSink>,
    log: DecisionLog,
    mode: DecisionLogMode,
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
pub fn decision_event(
    req: &CheckRequest,
    c: &Checked,
    set_name: &str,
    set: Option<&PolicySet>,
    dry_run: bool,
) -> Event {
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
    // Keys in byte order: the stored text is written here once, not built and re-sorted.
    e.details = esm_audit::FlatObject::new()
        .bool("dry_run", dry_run)
        .opt_str(
            "path",
            http.map(|h| h.path.split('?').next().unwrap_or_default()),
        )
        .opt_str("policy.hash", set.map(|s| s.hash.as_str()))
        .opt_str("policy.rule", set.map(|s| s.rule.as_str()))
        .str("policy.set", set_name)
        .bool("policy_allowed", c.policy_allowed)
        .opt_u64(
            "status",
            (!c.decision.allowed)
                .then_some(c.decision.http_status)
                .flatten()
                .map(u64::from),
        )
        .into();
    e
}

impl AuthzService {
    /// `sets` must not be empty; the first serves requests that name no set.
    pub fn new(
        sets: Vec<ServedSet>,
        opts: CheckOptions,
        audit: Option<AuditSink>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            sets: Arc::new(sets),
            opts,
            audit,
            log: DecisionLog::All,
            mode: DecisionLogMode::Async,
            metrics,
        }
    }

    /// Whether a Check waits for its record to be committed (async by default).
    pub fn with_decision_log_mode(mut self, mode: DecisionLogMode) -> Self {
        self.mode = mode;
        self
    }

    /// Which decisions are recorded (all by default).
    pub fn with_decision_log(mut self, log: DecisionLog) -> Self {
        self.log = log;
        self
    }

    /// Decides `req` and queues its record without waiting for it (the `async` mode's whole
    /// answer); pure apart from the counters and the audit queue.
    pub fn decide(&self, req: &CheckRequest) -> CheckResponse {
        let (response, _, outcome) = self.decide_recorded(req, false);
        self.count(outcome);
        response
    }

    /// Decides `req` and, in `sync` mode, waits until its record is committed; a record that
    /// fails denies with 503.
    pub async fn decide_durably(&self, req: &CheckRequest) -> CheckResponse {
        let (response, receipt, outcome) =
            self.decide_recorded(req, self.mode == DecisionLogMode::Sync);
        let Some(receipt) = receipt else {
            self.count(outcome);
            return response;
        };
        match receipt.committed().await {
            Ok(_) => {
                self.count(outcome);
                response
            }
            Err(e) => {
                tracing::warn!(error = %e, decision = "deny", failure = "audit", "authz failed closed: the decision's record was not committed");
                self.count(Counted::AuditRefused);
                crate::response::check_response(&audit_refused(), header(req, "x-request-id"))
            }
        }
    }

    /// Counts a decision under exactly one result.
    fn count(&self, outcome: Counted) {
        let m = &self.metrics;
        match outcome {
            Counted::Allowed => &m.allowed,
            Counted::Denied => &m.denied,
            Counted::FailedClosed => &m.failed_closed,
            Counted::AuditRefused => &m.audit_refused,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// The decision's response, the receipt of its record when `wait` asks for one, and the
    /// result it is to be counted under once its record is settled.
    fn decide_recorded(
        &self,
        req: &CheckRequest,
        wait: bool,
    ) -> (CheckResponse, Option<Receipt>, Counted) {
        let wanted = req
            .attributes
            .as_ref()
            .and_then(|a| a.context_extensions.get(SET_KEY));
        let served = match wanted {
            None => self.sets.first(),
            Some(name) => self.sets.iter().find(|s| &s.name == name),
        };
        let mut opts = self.opts;
        opts.dry_run = served.is_some_and(|s| s.dry_run);
        let set = served.map(|s| s.policies.borrow().clone());
        let set_name: &str = served.map_or_else(|| wanted.map_or("", String::as_str), |s| &s.name);
        let started = Instant::now();
        let mut c = match &set {
            Some(set) => check(set, req, &opts),
            // A route that names a set esm does not serve is a configuration error: deny.
            None => crate::check::refuse(
                Failure::Input,
                format!("no policy set named {set_name:?}"),
                &opts,
            ),
        };
        self.metrics
            .eval_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let hash = set.as_ref().map_or("", |s| s.hash.as_str());
        let mut receipt = None;
        let mut unrecorded = false;
        if let Some(sink) = self
            .audit
            .as_ref()
            .filter(|_| self.log.records(&c, opts.dry_run))
        {
            let event = decision_event(req, &c, set_name, set.as_deref(), opts.dry_run);
            let queued = if wait {
                sink.try_append_awaited(event)
            } else {
                sink.try_append(event)
            };
            match queued {
                Ok(r) => receipt = wait.then_some(r),
                Err(e) => {
                    if wait || (matches!(e, esm_audit::Error::QueueFull) && sink.fails_closed()) {
                        // Evidence cannot be kept: deny rather than let an unrecorded
                        // request in. esm failed closed; the policy did not deny.
                        unrecorded = true;
                        c.decision = audit_refused();
                    }
                    tracing::warn!(error = %e, "authz decision not recorded");
                }
            }
        }
        let m = &self.metrics;
        let outcome = match (&c.failure, c.decision.allowed) {
            _ if unrecorded => Counted::AuditRefused,
            (Some(_), _) => Counted::FailedClosed,
            (None, true) => Counted::Allowed,
            (None, false) => Counted::Denied,
        };
        if c.memoized {
            m.memoized.fetch_add(1, Ordering::Relaxed);
        }
        if opts.dry_run && !c.policy_allowed {
            m.dry_run_would_deny.fetch_add(1, Ordering::Relaxed);
        }
        if unrecorded {
            tracing::warn!(decision = "deny", failure = "audit", policy.set = %set_name, policy.hash = %hash, "authz failed closed: the decision could not be recorded");
        } else if let Some((f, reason)) = &c.failure {
            tracing::warn!(decision = "deny", failure = f.as_str(), reason = %reason, policy.set = %set_name, policy.hash = %hash, "authz failed closed");
        } else if opts.dry_run && !c.policy_allowed {
            tracing::info!(decision = "allow", policy.decision = "deny", policy.set = %set_name, policy.hash = %hash, "dry-run: the policy would deny");
        } else {
            tracing::debug!(decision = if c.decision.allowed { "allow" } else { "deny" }, policy.set = %set_name, policy.hash = %hash, "authz decision");
        }
        let id = header(req, "x-request-id");
        (
            crate::response::check_response(&c.decision, id),
            receipt,
            outcome,
        )
    }
}

/// The denial of a request whose decision could not be recorded.
/// The one result a decision is counted under (`esm_authz_decisions_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    Allowed,
    /// The policy denied.
    Denied,
    /// The policy could not decide: denied by esm.
    FailedClosed,
    /// The decision could not be recorded (audit queue full and failing closed, or in
    /// `sync` mode not committed): denied by esm, whatever the policy said.
    AuditRefused,
}

fn audit_refused() -> crate::decision::Decision {
    crate::decision::Decision {
        allowed: false,
        http_status: Some(503),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(self.decide_durably(request.get_ref()).await))
    }
}

/// How long one Check may take from its first byte to its answer, the body included: a
/// client that sends its request slowly, or never finishes it, holds a stream and a task
/// for no longer than this. Envoy's own ext_authz timeout is 200 ms by default.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Streams one connection may have open at once. An Envoy worker sends its Checks over one
/// connection, at most as many at once as it has requests waiting; 256 is well over what a
/// worker has in flight, and caps what one connection can hold (a task and a buffered
/// answer per stream, for a client that never reads its answers).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// Check (with its size limit) and grpc.health.v1, ready to serve, with the bounds above and
/// HTTP/2 keepalive pings that close connections whose peer has gone away unannounced.
async fn router(service: AuthzService) -> tonic::transport::server::Router {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<AuthorizationServer<AuthzService>>()
        .await;
    tonic::transport::Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        // tonic turns hyper's bound on streams a client makes the server reset off; a
        // client that does so without end is sent away (as on the agent socket).
        .http2_max_local_error_reset_streams(Some(1024))
        .http2_max_header_list_size(Some(64 << 10))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .add_service(health)
        .add_service(AuthorizationServer::new(service).max_decoding_message_size(MAX_MESSAGE))
}

/// Serves Check and grpc.health.v1 on `listener` until `shutdown` resolves, holding its
/// connections within [`Limits::grpc`](esm_listener::Limits::grpc).
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: AuthzService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(authz.listen = ?addr, "ext_authz serving");
    let listener = GuardedListener::new(listener, "ext_authz", Limits::grpc());
    serve_guarded(listener, service, shutdown).await
}

/// As [`serve`], on a Unix socket (Envoy's `pipe` address): no TCP port on the box, and
/// the socket's file permissions say who may ask.
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    service: AuthzService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tracing::info!(authz.listen_unix = ?listener.local_addr().ok(), "ext_authz serving");
    let listener = GuardedListener::new(listener, "ext_authz_unix", Limits::grpc());
    serve_guarded(listener, service, shutdown).await
}

/// As [`serve`], on a listener with limits of the caller's choosing.
pub async fn serve_guarded<L>(
    listener: GuardedListener<L>,
    service: AuthzService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error>
where
    L: Accept,
    L::Io: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
{
    router(service)
        .await
        .serve_with_incoming_shutdown(listener, shutdown)
        .await
}
