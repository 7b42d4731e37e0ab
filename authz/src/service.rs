//! The thin gRPC layer: `envoy.service.auth.v3.Authorization/Check` and grpc.health.v1 on
//! one listener. Each request reads the current policy set from a `watch` channel (swapped
//! atomically on reload), calls [`check`], and queues an `authz.decision` audit event:
//! without waiting for the disk (`async`), or answering only once the record is committed
//! (`sync`, [`DecisionLogMode`]).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use esm_audit::writer::{AuditSink, Receipt};
use esm_listener::{Accept, GuardedListener, Limits};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::check::{check, CheckOptions, Checked, Failure};
pub use crate::decision_record::decision_event;
use crate::decision_record::DecisionRecord;
use crate::policy_set::PolicySet;

/// Envoy sends at most the configured body (`max_request_bytes`); this bounds what a hostile
/// client can make the server decode.
pub const MAX_MESSAGE: usize = 16 << 20;

use crate::service_metrics::{Counted, Outcome};
pub use crate::service_metrics::{Metrics, SetLatency, UNSERVED_SET};

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

/// What a config reload (SIGHUP) can change while the service runs: each Check reads the
/// settings in force when it starts, so a reload never mixes old and new in one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `dry_run` here is ignored: each set has its own, in `dry_run`.
    pub opts: CheckOptions,
    pub log: DecisionLog,
    pub mode: DecisionLogMode,
    /// Dry-run switch of each served set, in the order of the sets.
    pub dry_run: Vec<bool>,
}

#[derive(Clone)]
pub struct AuthzService {
    sets: Arc<Vec<ServedSet>>,
    /// The sets' names, shared with the decision records that carry them.
    names: Arc<Vec<Arc<str>>>,
    settings: Arc<watch::Sender<Arc<Settings>>>,
    audit: Option<AuditSink>,
    metrics: Arc<Metrics>,
    /// Each served set's latency handles, in `sets` order, then those of Checks naming a
    /// set not served ([`UNSERVED_SET`]).
    latency: Arc<Vec<Arc<SetLatency>>>,
}

fn header<'a>(req: &'a CheckRequest, name: &str) -> &'a str {
    req.attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .and_then(|h| h.headers.get(name))
        .map_or("", String::as_str)
}

impl AuthzService {
    /// `sets` must not be empty; the first serves requests that name no set.
    pub fn new(
        sets: Vec<ServedSet>,
        opts: CheckOptions,
        audit: Option<AuditSink>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let settings = Settings {
            opts,
            log: DecisionLog::All,
            mode: DecisionLogMode::Async,
            dry_run: sets.iter().map(|s| s.dry_run).collect(),
        };
        let latency = sets
            .iter()
            .map(|s| s.name.as_str())
            .chain([UNSERVED_SET])
            .map(|name| metrics.set_latency(name))
            .collect();
        Self {
            latency: Arc::new(latency),
            names: Arc::new(sets.iter().map(|s| Arc::from(s.name.as_str())).collect()),
            sets: Arc::new(sets),
            settings: Arc::new(watch::Sender::new(Arc::new(settings))),
            audit,
            metrics,
        }
    }

    /// Whether a Check waits for its record to be committed (async by default).
    pub fn with_decision_log_mode(self, mode: DecisionLogMode) -> Self {
        self.settings.send_modify(|s| Arc::make_mut(s).mode = mode);
        self
    }

    /// Which decisions are recorded (all by default).
    pub fn with_decision_log(self, log: DecisionLog) -> Self {
        self.settings.send_modify(|s| Arc::make_mut(s).log = log);
        self
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.borrow().clone()
    }

    /// Replaces the settings for every Check that starts from now on (every clone of this
    /// service shares them).
    pub fn reconfigure(&self, settings: Settings) {
        self.settings.send_replace(Arc::new(settings));
    }

    /// Decides `req` and queues its record without waiting for it (the `async` mode's whole
    /// answer); pure apart from the counters and the audit queue.
    pub fn decide(&self, req: &CheckRequest) -> CheckResponse {
        let started = Instant::now();
        let (response, _, outcome) = self.decide_recorded(req, false, started);
        self.count(outcome, outcome.nanos);
        response
    }

    /// Decides `req` and, in `sync` mode, waits until its record is committed; a record that
    /// fails denies with 503.
    pub async fn decide_durably(&self, req: &CheckRequest) -> CheckResponse {
        let started = Instant::now();
        let (response, receipt, outcome) = self.decide_recorded(
            req,
            self.settings.borrow().mode == DecisionLogMode::Sync,
            started,
        );
        let Some(receipt) = receipt else {
            self.count(outcome, outcome.nanos);
            return response;
        };
        // Answered once the record is committed: the wait is part of the latency.
        let waited = || started.elapsed().as_nanos() as u64;
        match receipt.committed().await {
            Ok(_) => {
                self.count(outcome, waited());
                response
            }
            Err(e) => {
                tracing::warn!(error = %e, decision = "deny", failure = "audit", "authz failed closed: the decision's record was not committed");
                self.count(outcome.refused(), waited());
                crate::response::check_response(&audit_refused(), header(req, "x-request-id"))
            }
        }
    }

    /// Counts a decision under exactly one result, and its latency (`nanos`) under its set
    /// and that result.
    fn count(&self, outcome: Outcome, nanos: u64) {
        let m = &self.metrics;
        let l = self.latency.get(outcome.set).or(self.latency.last());
        let (counter, histogram) = match outcome.counted {
            Counted::Allowed => (&m.allowed, l.map(|l| &l.allow)),
            Counted::Denied => (&m.denied, l.map(|l| &l.deny)),
            Counted::FailedClosed => (&m.failed_closed, l.map(|l| &l.fail_closed)),
            Counted::AuditRefused => (&m.audit_refused, l.map(|l| &l.audit_refused)),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = histogram {
            h.observe_nanos(nanos);
        }
    }

    /// The decision's response, the receipt of its record when `wait` asks for one, and the
    /// result it is to be counted under once its record is settled.
    fn decide_recorded(
        &self,
        req: &CheckRequest,
        wait: bool,
        started: Instant,
    ) -> (CheckResponse, Option<Receipt>, Outcome) {
        let wanted = req
            .attributes
            .as_ref()
            .and_then(|a| a.context_extensions.get(SET_KEY));
        let index = match wanted {
            None => (!self.sets.is_empty()).then_some(0),
            Some(name) => self.sets.iter().position(|s| &s.name == name),
        };
        let served = index.and_then(|i| self.sets.get(i));
        let live = self.settings.borrow().clone();
        let dry_run = index.and_then(|i| live.dry_run.get(i)).copied() == Some(true);
        // The settings' own options serve every set that is not in dry run (their `dry_run`
        // is false); only a dry-run set's Check pays for a copy.
        let opts = if live.opts.dry_run == dry_run {
            std::borrow::Cow::Borrowed(&live.opts)
        } else {
            std::borrow::Cow::Owned(CheckOptions {
                dry_run,
                ..live.opts.clone()
            })
        };
        let set = served.map(|s| s.policies.borrow().clone());
        let set_name: Arc<str> = match index.and_then(|i| self.names.get(i)) {
            Some(name) => name.clone(),
            None => Arc::from(wanted.map_or("", String::as_str)),
        };
        let mut c = match &set {
            Some(set) => check(set, req, &opts),
            // A route that names a set esm does not serve is a configuration error: deny.
            None => crate::check::refuse(
                Failure::Input,
                format!("no policy set named {set_name:?}"),
                &opts,
            ),
        };
        // One clock read serves both the evaluation counter and the latency histogram: on
        // a memo hit (0.15 µs) a second read would cost more than the recording.
        let nanos = started.elapsed().as_nanos() as u64;
        self.metrics.eval_nanos.fetch_add(nanos, Ordering::Relaxed);
        let hash = set.as_ref().map_or("", |s| s.hash.as_str());
        let mut receipt = None;
        let mut unrecorded = false;
        if let Some(sink) = self
            .audit
            .as_ref()
            .filter(|_| live.log.records(&c, opts.dry_run))
        {
            // The writer makes the event off this thread; only a waiter gets a receipt.
            let record = DecisionRecord::of(req, &c, set_name.clone(), set.clone(), &opts);
            let queued = if wait {
                sink.try_append_lazy_awaited(Box::new(record)).map(Some)
            } else {
                sink.try_append_lazy(Box::new(record)).map(|()| None)
            };
            match queued {
                Ok(r) => receipt = r,
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
        let counted = match (&c.failure, c.decision.allowed) {
            _ if unrecorded => Counted::AuditRefused,
            (Some(_), _) => Counted::FailedClosed,
            (None, true) => Counted::Allowed,
            (None, false) => Counted::Denied,
        };
        let outcome = Outcome {
            counted,
            set: index.unwrap_or(self.sets.len()),
            nanos,
        };
        if c.memoized {
            m.memoized.fetch_add(1, Ordering::Relaxed);
        } else if let Some(set) = set.as_ref().filter(|_| c.evaluated()) {
            match set.engine_kind() {
                crate::engine::Kind::Bytecode => &m.evaluated_rvm,
                crate::engine::Kind::Interpreter => &m.evaluated_interpreter,
            }
            .fetch_add(1, Ordering::Relaxed);
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
        use tracing::Instrument;
        let req = request.get_ref();
        let headers = req
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .map(|h| &h.headers);
        let get = |name: &str| headers.and_then(|h| h.get(name)).map(String::as_str);
        let meta = request.metadata();
        let from_call = |name: &str| meta.get(name).and_then(|v| v.to_str().ok());
        // The span continues Envoy's trace: its log lines carry the id the mesh uses, and an
        // exported span has Envoy's trace id and Envoy's span as its parent. An Envoy with a
        // tracer sends its own span for this call in the gRPC metadata, while the request's
        // headers inside the CheckRequest still carry the client's span: the call's is the
        // nearer parent, so it comes first. Without a tracer only the headers have one.
        use crate::trace_context::{parent, trace_id};
        let trace = trace_id(from_call).or_else(|| trace_id(get));
        let span = tracing::info_span!("authz.check", trace.id = trace.unwrap_or(""));
        if let Some(parent) = parent(from_call).or_else(|| parent(get)) {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            // Err only when export is off (no layer to take it): nothing to continue then.
            let _ = span.set_parent(parent.otel_context());
        }
        Ok(Response::new(
            self.decide_durably(req).instrument(span).await,
        ))
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
    serve_incoming(listener, service, shutdown).await
}

/// As [`serve`], on connections the caller accepts (mutual TLS over a bounded listener).
pub async fn serve_incoming<I, IO, IE>(
    incoming: I,
    service: AuthzService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    router(service)
        .await
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
