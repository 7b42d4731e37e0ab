//! Envoy's Secret Discovery Service on the agent socket: StreamSecrets (state of the world),
//! DeltaSecrets and FetchSecrets. The caller is identified by the kernel (peer credentials),
//! its registration entries say what it may have, and every stream is pushed a new secret
//! when an SVID reaches half its life, when the CA rotates, or when entries change.
//!
//! The xDS rules (nonces, ACK, NACK, what a delta response carries) are [`super::xds`]'s;
//! this module does the I/O around them.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::context::{AgentContext, Caller};
use super::render::{render, version_of, Rendered, Rendering};
use super::secrets::{Refusal, SECRET_TYPE};
use super::subscriptions::{NotReady, Subscriptions};
use super::wake::{Follow, Wake};
use super::xds::{Delta, Received, Sotw, WrongType};

/// Responses queued per stream; a client that stops reading holds at most this many.
const QUEUE: usize = 4;
/// How long FetchSecrets waits for an SVID being issued before it answers Unavailable.
const FETCH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[derive(Clone)]
pub struct SdsService {
    ctx: AgentContext,
}

impl SdsService {
    pub fn new(ctx: AgentContext) -> Self {
        Self { ctx }
    }
}

fn refuse(ctx: &AgentContext, caller: &Caller, r: &Refusal) -> Status {
    ctx.metrics.refused.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(caller = %caller.actor, reason = ?r, "SDS request refused");
    r.status()
}

/// Attests the caller again before an answer is made; false (the refusal sent) when the
/// process that connected has exited or exec'd since the stream began.
async fn still_attested<T>(
    ctx: &AgentContext,
    caller: &mut Caller,
    tx: &mpsc::Sender<Result<T, Status>>,
) -> bool {
    match caller.recheck() {
        Ok(()) => true,
        Err(status) => {
            ctx.metrics.refused.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(Err(status)).await;
            false
        }
    }
}

/// Takes in a request: refuses another resource type (false: the stream ends) and reports
/// a NACK; `Some(true)` when it must be answered.
async fn take<T>(
    ctx: &AgentContext,
    caller: &Caller,
    received: Result<Received, WrongType>,
    tx: &mpsc::Sender<Result<T, Status>>,
) -> Option<bool> {
    match received {
        Err(wrong) => {
            let _ = tx
                .send(Err(Status::invalid_argument(wrong.to_string())))
                .await;
            None
        }
        Ok(r) => {
            if let Some(detail) = r.nack() {
                ctx.metrics.nacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(caller = %caller.actor, error_detail = %detail, "Envoy rejected an SDS response (NACK)");
            }
            Some(r.wants_answer())
        }
    }
}

/// Renders `names` for a stream: `Some(None)` while its SVIDs are not ready (the stream
/// stays open and waits), `None` when the caller was refused (the refusal sent).
async fn answer<T>(
    ctx: &AgentContext,
    caller: &Caller,
    names: &[String],
    subs: &mut Subscriptions,
    tx: &mpsc::Sender<Result<T, Status>>,
) -> Option<Option<Vec<Rendered>>> {
    match render(ctx, caller, names, subs) {
        Ok(Rendering::Ready(r)) => Some(Some(r)),
        Ok(Rendering::Waiting(_)) => Some(None),
        Err(r) => {
            let _ = tx.send(Err(refuse(ctx, caller, &r))).await;
            None
        }
    }
}

/// One SotW stream until the client goes away or is refused.
async fn sotw(
    ctx: AgentContext,
    mut caller: Caller,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut follow = Follow::all(&ctx);
    let mut state = Sotw::default();
    let mut subs = Subscriptions::default();
    loop {
        let asked = match follow.request(&mut inbound, subs.changed()).await {
            Wake::Closed => return,
            Wake::Changed => false,
            Wake::Request(req) => match take(&ctx, &caller, state.request(req), &tx).await {
                None => return,
                Some(false) => continue,
                Some(true) => true,
            },
        };
        let Some(names) = state.names().map(<[String]>::to_vec) else {
            continue;
        };
        if !still_attested(&ctx, &mut caller, &tx).await {
            return;
        }
        let Some(rendered) = answer(&ctx, &caller, &names, &mut subs, &tx).await else {
            return;
        };
        let Some(resp) = rendered.and_then(|r| state.respond(r, asked)) else {
            continue;
        };
        ctx.metrics.responses.fetch_add(1, Ordering::Relaxed);
        if tx.send(Ok(resp)).await.is_err() {
            return;
        }
    }
}

/// One delta stream: only changed resources are sent, removed ones are named.
async fn delta(
    ctx: AgentContext,
    mut caller: Caller,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) {
    let mut follow = Follow::all(&ctx);
    let mut state = Delta::default();
    let mut subs = Subscriptions::default();
    loop {
        match follow.request(&mut inbound, subs.changed()).await {
            Wake::Closed => return,
            Wake::Changed => {}
            Wake::Request(req) => match take(&ctx, &caller, state.request(req), &tx).await {
                None => return,
                Some(false) => continue,
                Some(true) => {}
            },
        }
        let Some(names) = state.names() else { continue };
        if !still_attested(&ctx, &mut caller, &tx).await {
            return;
        }
        let Some(rendered) = answer(&ctx, &caller, &names, &mut subs, &tx).await else {
            return;
        };
        let Some(resp) = rendered.and_then(|r| state.respond(r)) else {
            continue;
        };
        ctx.metrics.responses.fetch_add(1, Ordering::Relaxed);
        if tx.send(Ok(resp)).await.is_err() {
            return;
        }
    }
}

/// Counts a stream while it lives.
struct OpenStream(Arc<super::context::AgentMetrics>);

impl OpenStream {
    fn new(m: &Arc<super::context::AgentMetrics>) -> Self {
        m.open_streams.fetch_add(1, Ordering::Relaxed);
        Self(m.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SdsService {
    /// Attests the caller, then runs `body` for the stream on its own task, counted while
    /// it lives; responses go through a short queue.
    fn spawn<Req, Resp, F, Fut>(
        &self,
        request: Request<Streaming<Req>>,
        body: F,
    ) -> Result<Response<BoxStream<Resp>>, Status>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(AgentContext, Caller, Streaming<Req>, mpsc::Sender<Result<Resp, Status>>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let caller = super::server::caller_of(&request)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let ctx = self.ctx.clone();
        let open = OpenStream::new(&ctx.metrics);
        let run = body(ctx, caller, request.into_inner(), tx);
        tokio::spawn(async move {
            let _open = open;
            run.await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for SdsService {
    type StreamSecretsStream = BoxStream<DiscoveryResponse>;
    type DeltaSecretsStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        self.spawn(request, sotw)
    }

    async fn delta_secrets(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        self.spawn(request, delta)
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let caller = super::server::caller_of(&request)?;
        let req = request.into_inner();
        if !req.type_url.is_empty() && req.type_url != SECRET_TYPE {
            return Err(Status::invalid_argument(format!(
                "FetchSecrets serves {SECRET_TYPE}"
            )));
        }
        let mut subs = Subscriptions::default();
        let deadline = tokio::time::Instant::now() + FETCH_WAIT;
        let rendered = loop {
            match render(&self.ctx, &caller, &req.resource_names, &mut subs)
                .map_err(|r| refuse(&self.ctx, &caller, &r))?
            {
                Rendering::Ready(r) => break r,
                Rendering::Waiting(NotReady::Unavailable(why)) => {
                    return Err(Status::unavailable(format!(
                        "the CA cannot issue now; retry: {why}"
                    )))
                }
                Rendering::Waiting(_) => {
                    if tokio::time::timeout_at(deadline, subs.changed())
                        .await
                        .is_err()
                    {
                        return Err(Status::unavailable("SVID not issued in time; retry"));
                    }
                }
            }
        };
        Ok(Response::new(DiscoveryResponse {
            version_info: version_of(&rendered),
            resources: rendered.into_iter().map(|r| r.secret).collect(),
            type_url: SECRET_TYPE.into(),
            nonce: "0".into(),
            ..Default::default()
        }))
    }
}
