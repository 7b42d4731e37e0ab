//! SDS on the wire: the routing envoy-types' generated server does, with a codec whose
//! buffers start small.
//!
//! tonic's default codec reserves 8 KiB to encode and 8 KiB to decode for every stream from
//! its first message. An SDS stream is pushed a few KiB when an SVID or the bundle changes
//! and receives ACKs of a few hundred bytes; at a thousand streams those two reservations
//! were about half of what the agent held per stream. The buffers here start at
//! [`BUFFER`] and still grow to any message's size (up to the decoding limit).

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SERVICE_NAME,
};
use tonic::body::Body as GrpcBody;
use tonic::codec::{BufferSettings, Codec};
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use super::sds::SdsService;

/// What each stream's encoder and decoder reserve at first.
pub const BUFFER: usize = 1024;
/// tonic's own: how much encoded output a stream may hold before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// The prost codec with small initial buffers.
struct SmallCodec<T, U>(PhantomData<fn() -> (T, U)>);

impl<T, U> Default for SmallCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }
}

/// The SDS gRPC service: StreamSecrets, DeltaSecrets and FetchSecrets of [`SdsService`].
#[derive(Clone)]
pub struct SdsServer {
    sds: Arc<SdsService>,
    max_message: usize,
}

impl SdsServer {
    /// Serves `sds`, refusing requests larger than `max_message` bytes.
    pub fn new(sds: SdsService, max_message: usize) -> Self {
        Self {
            sds: Arc::new(sds),
            max_message,
        }
    }
}

impl NamedService for SdsServer {
    const NAME: &'static str = SERVICE_NAME;
}

/// The answer to a method this service does not have, as gRPC says it.
fn unimplemented() -> http::Response<GrpcBody> {
    let mut response = http::Response::new(GrpcBody::default());
    let headers = response.headers_mut();
    headers.insert(
        tonic::Status::GRPC_STATUS,
        (tonic::Code::Unimplemented as i32).into(),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        tonic::metadata::GRPC_CONTENT_TYPE,
    );
    response
}

impl<B> Service<http::Request<B>> for SdsServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<GrpcBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (sds, limit) = (self.sds.clone(), Some(self.max_message));
        let method = req
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(SERVICE_NAME))
            .and_then(|m| m.strip_prefix('/'))
            .unwrap_or_default()
            .to_owned();
        Box::pin(async move {
            Ok(match method.as_str() {
                "StreamSecrets" => {
                    let codec = SmallCodec::<DiscoveryResponse, DiscoveryRequest>::default();
                    let call = tower::service_fn(move |r| {
                        let sds = sds.clone();
                        async move { sds.stream_secrets(r).await }
                    });
                    let mut grpc = Grpc::new(codec).apply_max_message_size_config(limit, None);
                    grpc.streaming(call, req).await
                }
                "DeltaSecrets" => {
                    let codec =
                        SmallCodec::<DeltaDiscoveryResponse, DeltaDiscoveryRequest>::default();
                    let call = tower::service_fn(move |r| {
                        let sds = sds.clone();
                        async move { sds.delta_secrets(r).await }
                    });
                    let mut grpc = Grpc::new(codec).apply_max_message_size_config(limit, None);
                    grpc.streaming(call, req).await
                }
                "FetchSecrets" => {
                    let codec = SmallCodec::<DiscoveryResponse, DiscoveryRequest>::default();
                    let call = tower::service_fn(move |r| {
                        let sds = sds.clone();
                        async move { sds.fetch_secrets(r).await }
                    });
                    let mut grpc = Grpc::new(codec).apply_max_message_size_config(limit, None);
                    grpc.unary(call, req).await
                }
                _ => unimplemented(),
            })
        })
    }
}
