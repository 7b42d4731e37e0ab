//! What the agent socket tests share: an agent on a temporary socket, a well-behaved
//! client, and the raw HTTP/2 a hostile client writes by hand.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use esm_agent::connection_limits::Limits;
use esm_agent::context::{AgentContext, AgentMetrics};
use esm_agent::secrets::{ROOTCA, SECRET_TYPE};
use esm_ca::key_backend::file::FileKeyStore;
use esm_ca::key_backend::KeyAlgorithm;
use esm_ca::material::CaMaterial;
use esm_ca::rotation::RotationPolicy;
use esm_ca::store::{CaStore, InitOptions};
use esm_identity::TrustDomain;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const SETTINGS: u8 = 0x4;
pub const HEADERS: u8 = 0x1;
pub const CONTINUATION: u8 = 0x9;
pub const END_HEADERS: u8 = 0x4;
pub const MAX_FRAME: usize = 16_384;

pub struct Agent {
    _dir: tempfile::TempDir,
    pub sock: std::path::PathBuf,
    _stop: watch::Sender<bool>,
}

fn context(dir: &std::path::Path) -> AgentContext {
    let store = CaStore::new(
        dir.join("ca"),
        Arc::new(FileKeyStore::new(dir.join("ca/keys"), None)),
    );
    store
        .init(
            InitOptions {
                trust_domain: TrustDomain::parse("example.org").unwrap(),
                algorithm: KeyAlgorithm::EcP256,
                upstream: None,
            },
            &RotationPolicy::default(),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let state = store.load().unwrap();
    let material = CaMaterial::load(&store, &state, time::OffsetDateTime::now_utc()).unwrap();
    let (ca_tx, ca) = watch::channel(Arc::new(material));
    let (entries_tx, entries) =
        watch::channel(Arc::new(esm_agent::entry_index::EntrySet::default()));
    std::mem::forget((ca_tx, entries_tx));
    AgentContext::new(
        ca,
        entries,
        Default::default(),
        None,
        Arc::new(AgentMetrics::default()),
    )
}

/// An agent on a fresh socket within `limits`.
pub async fn agent(limits: Limits) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let sock = dir.path().join("agent.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let (stop, mut stop_rx) = watch::channel(false);
    let shutdown = async move {
        let _ = stop_rx.changed().await;
    };
    tokio::spawn(esm_agent::server::serve_with_limits(
        listener, ctx, limits, shutdown,
    ));
    Agent {
        _dir: dir,
        sock,
        _stop: stop,
    }
}

/// A well-behaved client: a new connection and one SDS fetch of the trust bundle.
pub async fn served(sock: &std::path::Path) -> Result<(), String> {
    let call = async {
        let channel = esm_agent::server::connect(sock)
            .await
            .map_err(|e| e.to_string())?;
        let r = SecretDiscoveryServiceClient::new(channel)
            .fetch_secrets(DiscoveryRequest {
                resource_names: vec![ROOTCA.into()],
                type_url: SECRET_TYPE.into(),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        match r.into_inner().resources.len() {
            1 => Ok(()),
            n => Err(format!("{n} resources")),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| "timed out".to_string())?
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer (RFC 7541 §5.1): `value` with an `n`-bit prefix under `flags`.
pub fn hpack_int(flags: u8, n: u32, value: usize) -> Vec<u8> {
    let max = (1usize << n) - 1;
    if value < max {
        return vec![flags | value as u8];
    }
    let (mut out, mut rest) = (vec![flags | max as u8], value - max);
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
    out
}

/// Waits until the server closes `s` (EOF or reset), reading whatever it sends first.
pub async fn closed_within(s: &mut (impl AsyncRead + Unpin), limit: Duration) -> bool {
    let drain = async {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, drain).await.is_ok()
}

/// Reads one frame: `(kind, flags, stream, payload)`, or `None` at EOF or on error.
pub async fn read_frame(s: &mut (impl AsyncRead + Unpin)) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut h = [0u8; 9];
    s.read_exact(&mut h).await.ok()?;
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    Some((h[3], h[4], stream, payload))
}

/// A literal header field without indexing, new name (RFC 7541 §6.2.2), no Huffman.
pub fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend(hpack_int(0, 7, name.len()));
    out.extend_from_slice(name);
    out.extend(hpack_int(0, 7, value.len()));
    out.extend_from_slice(value);
    out
}

/// The header block of an SDS StreamSecrets call, all literals; `extra` is appended.
pub fn stream_secrets(extra: &[(&[u8], &[u8])]) -> Vec<u8> {
    let path = b"/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets";
    let fields: [(&[u8], &[u8]); 6] = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path),
        (b":authority", b"localhost"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ];
    fields
        .iter()
        .chain(extra)
        .flat_map(|(n, v)| literal(n, v))
        .collect()
}

/// A StreamSecrets stream for the trust bundle, open (first answer read) until the returned
/// sender is dropped; the refusal's status when the agent will not open it.
pub async fn open_bundle_stream(
    sock: &std::path::Path,
) -> Result<tokio::sync::mpsc::Sender<DiscoveryRequest>, tonic::Status> {
    let channel = esm_agent::server::connect(sock).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(DiscoveryRequest {
        resource_names: vec![ROOTCA.into()],
        type_url: SECRET_TYPE.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut answers = SecretDiscoveryServiceClient::new(channel)
        .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), answers.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no first answer"))??;
    assert!(first.is_some(), "the stream ended before its first answer");
    // The answers stay with a task that reads them, as an Envoy does.
    tokio::spawn(async move { while let Ok(Some(_)) = answers.message().await {} });
    Ok(tx)
}

/// A new connection whose preface is sent and whose server SETTINGS are acknowledged: from
/// here on the server's limits are in force.
pub async fn handshake(sock: &std::path::Path) -> UnixStream {
    let mut s = UnixStream::connect(sock).await.unwrap();
    s.write_all(&[PREFACE, &frame(SETTINGS, 0, 0, &[])].concat())
        .await
        .unwrap();
    loop {
        let (kind, flags, _, _) = read_frame(&mut s).await.unwrap();
        if kind == SETTINGS && flags & 0x1 == 0 {
            s.write_all(&frame(SETTINGS, 0x1, 0, &[])).await.unwrap();
            return s;
        }
    }
}

/// Reads frames until one `want` returns `Some` for; `None` on EOF or after `limit`.
pub async fn wait_for<T>(
    s: &mut (impl AsyncRead + Unpin),
    limit: Duration,
    mut want: impl FnMut(u8, u32, &[u8]) -> Option<T>,
) -> Option<T> {
    let find = async {
        while let Some((kind, _, stream, payload)) = read_frame(s).await {
            if let Some(t) = want(kind, stream, &payload) {
                return Some(t);
            }
        }
        None
    };
    tokio::time::timeout(limit, find).await.ok().flatten()
}
