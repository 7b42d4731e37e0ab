//! Envoy's Secret Discovery Service on the agent socket: StreamSecrets (state of the world),
//! DeltaSecrets and FetchSecrets. The caller is identified by the kernel (peer credentials),
//! its registration entries say what it may have, and every stream is pushed a new secret
//! when an SVID reaches half its life, when the CA rotates, or when entries change.
//!
//! xDS rules kept here: a response carries a fresh nonce; a request echoing an older nonce
//! is stale and ignored; an ACK or NACK with unchanged names sends nothing (a NACK is
//! logged with Envoy's error_detail and never answered with the same secret again).

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::context::{AgentContext, Caller};
use super::render::{render, version_of, Rendered};
use super::secrets::{Refusal, SECRET_TYPE};
use super::svid_set::SvidSet;

/// Responses queued per stream; a client that stops reading holds at most this many.
const QUEUE: usize = 4;

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

/// Sleeps until the next SVID refresh, or forever when none is held.
pub(crate) async fn until_refresh(svids: &SvidSet) {
    match svids.next_refresh() {
        Some(at) => {
            let left = at - time::OffsetDateTime::now_utc();
            let d = std::time::Duration::try_from(left).unwrap_or_default();
            tokio::time::sleep(d).await;
        }
        None => std::future::pending().await,
    }
}

/// What woke a stream.
enum Wake<R> {
    Request(R),
    Closed,
    Changed,
}

/// Waits for the next request, an SVID refresh, a CA change or an entries change, and marks
/// the changes seen.
async fn wait<R>(
    caller: &Caller,
    inbound: &mut Streaming<R>,
    svids: &SvidSet,
    ca: &mut tokio::sync::watch::Receiver<Arc<esm_ca::material::CaMaterial>>,
    entries: &mut tokio::sync::watch::Receiver<Arc<Vec<super::entry::Entry>>>,
) -> Wake<R> {
    let wake = tokio::select! {
        m = inbound.next() => match m {
            Some(Ok(req)) => Wake::Request(req),
            Some(Err(e)) => {
                tracing::debug!(caller = %caller.actor, error = %e, "SDS stream failed");
                Wake::Closed
            }
            None => Wake::Closed,
        },
        _ = until_refresh(svids) => Wake::Changed,
        r = ca.changed() => if r.is_ok() { Wake::Changed } else { Wake::Closed },
        r = entries.changed() => if r.is_ok() { Wake::Changed } else { Wake::Closed },
    };
    ca.borrow_and_update();
    entries.borrow_and_update();
    wake
}

/// Refuses a request for another resource type; true when it was one.
async fn wrong_type<T>(type_url: &str, tx: &mpsc::Sender<Result<T, Status>>) -> bool {
    if type_url.is_empty() || type_url == SECRET_TYPE {
        return false;
    }
    let msg = format!("this stream serves {SECRET_TYPE}");
    let _ = tx.send(Err(Status::invalid_argument(msg))).await;
    true
}

/// One SotW stream until the client goes away or is refused.
async fn sotw(
    ctx: AgentContext,
    mut caller: Caller,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let (mut ca, mut entries) = (ctx.ca.clone(), ctx.entries.clone());
    let mut names: Option<Vec<String>> = None;
    let mut svids = SvidSet::default();
    let (mut nonce, mut last_nonce, mut last_version) = (0u64, String::new(), String::new());
    loop {
        let wake = wait(&caller, &mut inbound, &svids, &mut ca, &mut entries).await;
        let asked = match wake {
            Wake::Closed => return,
            Wake::Changed => false,
            Wake::Request(req) => {
                if wrong_type(&req.type_url, &tx).await {
                    return;
                }
                let same = names.as_ref() == Some(&req.resource_names);
                if !req.response_nonce.is_empty() {
                    if req.response_nonce != last_nonce {
                        continue; // stale: an answer to an older response
                    }
                    if let Some(err) = &req.error_detail {
                        ctx.metrics.nacks.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(caller = %caller.actor, version = %req.version_info, error_detail = %err.message, "Envoy rejected an SDS response (NACK)");
                    }
                    if same {
                        continue;
                    }
                }
                names = Some(req.resource_names);
                true
            }
        };
        let Some(wanted) = &names else { continue };
        if !still_attested(&ctx, &mut caller, &tx).await {
            return;
        }
        let rendered = match render(&ctx, &caller, wanted, &mut svids) {
            Ok(r) => r,
            Err(r) => {
                let _ = tx.send(Err(refuse(&ctx, &caller, &r))).await;
                return;
            }
        };
        let version = version_of(&rendered);
        if !asked && version == last_version {
            continue;
        }
        nonce += 1;
        last_nonce = nonce.to_string();
        last_version = version.clone();
        let resp = DiscoveryResponse {
            version_info: version,
            resources: rendered.into_iter().map(|r| r.secret).collect(),
            type_url: SECRET_TYPE.into(),
            nonce: last_nonce.clone(),
            ..Default::default()
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
    let (mut ca, mut entries) = (ctx.ca.clone(), ctx.entries.clone());
    let mut subscribed: Option<BTreeSet<String>> = None;
    let mut sent: BTreeMap<String, String> = BTreeMap::new();
    let mut svids = SvidSet::default();
    let mut nonce = 0u64;
    loop {
        let wake = wait(&caller, &mut inbound, &svids, &mut ca, &mut entries).await;
        match wake {
            Wake::Closed => return,
            Wake::Changed => {}
            Wake::Request(req) => {
                if wrong_type(&req.type_url, &tx).await {
                    return;
                }
                if let Some(err) = &req.error_detail {
                    ctx.metrics.nacks.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(caller = %caller.actor, error_detail = %err.message, "Envoy rejected a delta SDS response (NACK)");
                }
                let subs = subscribed.get_or_insert_with(|| {
                    sent.extend(req.initial_resource_versions.clone());
                    BTreeSet::new()
                });
                subs.extend(req.resource_names_subscribe);
                for n in &req.resource_names_unsubscribe {
                    subs.remove(n);
                    sent.remove(n);
                }
            }
        }
        let Some(subs) = &subscribed else { continue };
        let names: Vec<String> = subs.iter().cloned().collect();
        if !still_attested(&ctx, &mut caller, &tx).await {
            return;
        }
        let rendered = match render(&ctx, &caller, &names, &mut svids) {
            Ok(r) => r,
            Err(r) => {
                let _ = tx.send(Err(refuse(&ctx, &caller, &r))).await;
                return;
            }
        };
        let system_version_info = version_of(&rendered);
        let now: BTreeSet<&str> = rendered.iter().map(|r| r.name.as_str()).collect();
        let removed: Vec<String> = sent
            .keys()
            .filter(|k| !now.contains(k.as_str()))
            .cloned()
            .collect();
        let changed: Vec<Rendered> = rendered
            .into_iter()
            .filter(|r| sent.get(&r.name) != Some(&r.version))
            .collect();
        if changed.is_empty() && removed.is_empty() {
            continue;
        }
        for n in &removed {
            sent.remove(n);
        }
        let resources = changed
            .into_iter()
            .map(|r| {
                sent.insert(r.name.clone(), r.version.clone());
                Resource {
                    name: r.name,
                    version: r.version,
                    resource: Some(r.secret),
                    ..Default::default()
                }
            })
            .collect();
        nonce += 1;
        let resp = DeltaDiscoveryResponse {
            system_version_info,
            resources,
            removed_resources: removed,
            type_url: SECRET_TYPE.into(),
            nonce: nonce.to_string(),
            ..Default::default()
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
        let mut svids = SvidSet::default();
        let rendered = render(&self.ctx, &caller, &req.resource_names, &mut svids)
            .map_err(|r| refuse(&self.ctx, &caller, &r))?;
        Ok(Response::new(DiscoveryResponse {
            version_info: version_of(&rendered),
            resources: rendered.into_iter().map(|r| r.secret).collect(),
            type_url: SECRET_TYPE.into(),
            nonce: "0".into(),
            ..Default::default()
        }))
    }
}
