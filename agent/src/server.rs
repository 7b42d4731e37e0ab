//! The agent socket: SDS and, beside it, the SPIFFE Workload API, over gRPC on a Unix
//! socket. Every caller is attested from its peer credentials before anything is served.

use tonic::{Request, Status};

use super::connection_limits::Limits;
use super::context::{AgentContext, Caller};
use super::entry::Selector;
use super::h2_authority::{MAX_FRAME, MAX_HEADER_LIST};
use super::mtls_peers::PeerSpiffeId;
use super::sds::SdsService;
use super::sds_server::SdsServer;
use super::stream_limits::{PerUidStreams, StreamBudget};
use super::unix::UnixPeer;
use super::workload_api::WorkloadApi;
use esm_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;

/// Largest request accepted: SDS requests are names and a node; 10,000 names fit easily,
/// a flood does not.
pub const MAX_MESSAGE: usize = 4 << 20;
/// Streams one connection may have open at once. tonic passes "no limit" to hyper unless
/// told otherwise, which would let one connection start handlers without end; 200 is
/// hyper's own default, and far over the SDS and Workload API streams one Envoy or SPIFFE
/// library opens.
pub const MAX_STREAMS: u32 = 200;
/// Streams a connection may make the server reset (for its errors) before it is closed:
/// hyper's default, which tonic likewise replaces with "no limit" (the h2 "reset flood").
pub const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// The attested caller of a request: on the Unix socket from its peer credentials and the
/// process pinned at accept (PermissionDenied when it has exited or exec'd since), on the
/// TCP listener from its client certificate's SPIFFE ID.
pub fn caller_of<T>(req: &Request<T>) -> Result<Caller, Status> {
    if let Some(PeerSpiffeId(id)) = req.extensions().get::<PeerSpiffeId>() {
        let id = id.as_ref().ok_or_else(|| {
            Status::unauthenticated("client certificate does not carry exactly one SPIFFE ID")
        })?;
        let selector = Selector::parse(&format!("spiffe:{id}"))
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        return Ok(Caller {
            selectors: [selector].into(),
            actor: format!("spiffe:{id}"),
            peer: None,
        });
    }
    let peer = req
        .extensions()
        .get::<UnixPeer>()
        .and_then(|p| p.0.clone())
        .ok_or_else(|| Status::unauthenticated("caller cannot be attested: no peer credentials"))?;
    let cred = peer.cred();
    let actor = match cred.pid {
        Some(pid) => format!("unix:uid:{}:pid:{pid}", cred.uid),
        None => format!("unix:uid:{}", cred.uid),
    };
    let selectors = peer.check()?;
    Ok(Caller {
        selectors,
        actor,
        peer: Some(peer),
    })
}

/// The agent's gRPC services. `streams_per_uid` applies to Unix peers (see
/// [`super::stream_limits`]); the TCP listener's peers have no uid and pass.
fn router(
    ctx: AgentContext,
    streams_per_uid: usize,
) -> tonic::transport::server::Router<
    tower::layer::util::Stack<PerUidStreams, tower::layer::util::Identity>,
> {
    let budget = StreamBudget::new(streams_per_uid, ctx.metrics.clone());
    // The frame and header list limits are the ones the Unix socket's relay enforces
    // before the server sees a byte (see `h2_authority`): pinned here so the two agree.
    tonic::transport::Server::builder()
        .layer(PerUidStreams { budget })
        .max_concurrent_streams(MAX_STREAMS)
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .http2_max_header_list_size(MAX_HEADER_LIST as u32)
        .max_frame_size(MAX_FRAME as u32)
        .add_service(SdsServer::new(SdsService::new(ctx.clone()), MAX_MESSAGE))
        .add_service(
            SpiffeWorkloadApiServer::new(WorkloadApi::new(ctx))
                .max_decoding_message_size(MAX_MESSAGE),
        )
}

/// Serves SDS and the Workload API on `listener` until `shutdown` resolves, within the
/// default [`Limits`].
pub async fn serve(
    listener: tokio::net::UnixListener,
    ctx: AgentContext,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    serve_with_limits(listener, ctx, Limits::default(), shutdown).await
}

/// [`serve`] within `limits`.
pub async fn serve_with_limits(
    listener: tokio::net::UnixListener,
    ctx: AgentContext,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tracing::info!(agent.socket = ?listener.local_addr().ok(), "SDS serving");
    router(ctx, limits.max_streams_per_uid)
        .serve_with_incoming_shutdown(super::unix::incoming(listener, limits), shutdown)
        .await
}

/// Serves the same over mutual TLS on a TCP `listener` (see [`super::mtls`]).
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    ctx: AgentContext,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), crate::Error> {
    let mut subs = super::subscriptions::Subscriptions::default();
    let creds = super::mtls::Credentials::new(
        &ctx.svids,
        &ctx.ca,
        super::mtls::Listener::agent(),
        &mut subs,
    )
    .await?;
    tracing::info!(agent.listen = ?listener.local_addr().ok(), "SDS serving over mTLS");
    let renew = tokio::spawn(creds.clone().run(ctx.ca.clone(), subs));
    let incoming = super::mtls::incoming(super::mtls::tcp_accepted(listener), creds);
    let served = router(ctx, Limits::default().max_streams_per_uid)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    renew.abort();
    served.map_err(|e| crate::Error::Config(format!("agent TCP listener: {e}")))
}

/// A gRPC channel to the agent socket at `path`: what in-process clients (tests, the SDS
/// benchmark) use; Envoy and SPIFFE libraries bring their own.
pub async fn connect(
    path: &std::path::Path,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
}
