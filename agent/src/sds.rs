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
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::context::{AgentContext, Caller};
use super::render::{render, version_of, Rendered, Rendering};
use super::secrets::{Refusal, SECRET_TYPE};
use super::subscriptions::{NotReady, Subscriptions};
use super::wake::{responses, Follow, Responder, Wake};
use super::xds::{Delta, Received, Sotw, WrongType};

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

/// The protocol state of one stream flavour (see [`super::xds`]).
trait Protocol: Default + Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    fn request(&mut self, req: Self::Request) -> Result<Received, WrongType>;
    fn names(&self) -> Option<Vec<String>>;
    fn respond(&mut self, rendered: Vec<Rendered>, asked: bool) -> Option<Self::Response>;
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    fn request(&mut self, req: DiscoveryRequest) -> Result<Received, WrongType> {
        Sotw::request(self, req)
    }
    fn names(&self) -> Option<Vec<String>> {
        Sotw::names(self).map(<[String]>::to_vec)
    }
    fn respond(&mut self, rendered: Vec<Rendered>, asked: bool) -> Option<DiscoveryResponse> {
        Sotw::respond(self, rendered, asked)
    }
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    fn request(&mut self, req: DeltaDiscoveryRequest) -> Result<Received, WrongType> {
        Delta::request(self, req)
    }
    fn names(&self) -> Option<Vec<String>> {
        Delta::names(self)
    }
    fn respond(&mut self, rendered: Vec<Rendered>, _asked: bool) -> Option<DeltaDiscoveryResponse> {
        Delta::respond(self, rendered)
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

/// One SDS stream (a [`Responder`]: no task or queue of its own).
struct Session<P: Protocol> {
    ctx: AgentContext,
    caller: Caller,
    inbound: Streaming<P::Request>,
    follow: Follow,
    protocol: P,
    subs: Subscriptions,
    ended: bool,
    _open: OpenStream,
}

impl<P: Protocol> Session<P> {
    fn new(ctx: AgentContext, caller: Caller, inbound: Streaming<P::Request>) -> Self {
        Self {
            follow: Follow::all(&ctx),
            _open: OpenStream::new(&ctx.metrics),
            ctx,
            caller,
            inbound,
            protocol: P::default(),
            subs: Subscriptions::default(),
            ended: false,
        }
    }

    /// Ends the stream with `status`.
    fn end(&mut self, status: Status) -> Option<Result<P::Response, Status>> {
        self.ended = true;
        Some(Err(status))
    }
}

impl<P: Protocol> Responder for Session<P> {
    type Item = Result<P::Response, Status>;

    /// Waits for the next response to send: after a request that wants one, or when what
    /// the client subscribes to changes. `None` when the stream is over.
    async fn next(&mut self) -> Option<Result<P::Response, Status>> {
        if self.ended {
            return None;
        }
        loop {
            let wake = self
                .follow
                .request(&mut self.inbound, self.subs.changed())
                .await;
            let asked = match wake {
                Wake::Closed => return None,
                Wake::Changed => false,
                Wake::Request(req) => match self.protocol.request(req) {
                    Err(wrong) => return self.end(Status::invalid_argument(wrong.to_string())),
                    Ok(received) => {
                        if let Some(detail) = received.nack() {
                            self.ctx.metrics.nacks.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(caller = %self.caller.actor, error_detail = %detail, "Envoy rejected an SDS response (NACK)");
                        }
                        if !received.wants_answer() {
                            continue;
                        }
                        true
                    }
                },
            };
            let Some(names) = self.protocol.names() else {
                continue;
            };
            // Rendering and answering are synchronous: the guard never spans an await.
            let span = tracing::info_span!(
                "sds.push",
                sds.caller = %self.caller.actor,
                // As i64: an unsigned field reaches OTLP as a string.
                sds.resources = names.len() as i64,
                sds.asked = asked,
                sds.after_ca_change = tracing::field::Empty,
                sds.sent = tracing::field::Empty,
            );
            let _entered = span.enter();
            // Attested again before every answer: the process that connected may have
            // exited or exec'd since.
            if let Err(status) = self.caller.recheck() {
                self.ctx.metrics.refused.fetch_add(1, Ordering::Relaxed);
                return self.end(status);
            }
            let rendered = match render(&self.ctx, &self.caller, &names, &mut self.subs) {
                Ok(Rendering::Ready(r)) => r,
                // Not yet issued, or the CA cannot sign now: the stream waits, open.
                Ok(Rendering::Waiting(_)) => continue,
                Err(r) => {
                    let status = refuse(&self.ctx, &self.caller, &r);
                    return self.end(status);
                }
            };
            let response = self.protocol.respond(rendered, asked);
            span.record("sds.sent", response.is_some());
            // After a new signing CA, nothing may be new to send yet: the SVIDs are still the
            // old CA's while their renewal is issued. The CA change is then answered by the
            // push of the renewed SVIDs, and its latency counted there, not dropped here.
            let renewal_to_come = response.is_none()
                && (self.subs).any_signed_by_other_than(&self.follow.ca().signing.id);
            let ca_change = if renewal_to_come {
                None
            } else {
                self.follow.take_ca_change()
            };
            span.record("sds.after_ca_change", ca_change.is_some());
            if let Some(resp) = response {
                self.ctx.metrics.responses.fetch_add(1, Ordering::Relaxed);
                if let Some(seen) = ca_change {
                    self.ctx
                        .metrics
                        .sds_push_after_ca_change
                        .observe(seen.elapsed());
                }
                return Some(Ok(resp));
            }
        }
    }
}

impl SdsService {
    /// Attests the caller and starts its stream.
    fn open<P: Protocol>(
        &self,
        request: Request<Streaming<P::Request>>,
    ) -> Result<Response<BoxStream<P::Response>>, Status> {
        let caller = super::server::caller_of(&request)?;
        let session = Session::<P>::new(self.ctx.clone(), caller, request.into_inner());
        Ok(Response::new(responses(session)))
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
        self.open::<Sotw>(request)
    }

    async fn delta_secrets(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        self.open::<Delta>(request)
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
