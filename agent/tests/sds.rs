//! The SDS server on a real Unix socket, with tonic clients: entitlement, ACK/NACK, pushes on
//! SVID refresh and CA change, delta and fetch, and hostile streams.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use esm_agent::context::{AgentContext, AgentMetrics};
use esm_agent::entry::{Entry, Selector};
use esm_agent::secrets::SECRET_TYPE;
use esm_ca::key_backend::file::FileKeyStore;
use esm_ca::key_backend::KeyAlgorithm;
use esm_ca::material::CaMaterial;
use esm_ca::rotation::RotationPolicy;
use esm_ca::store::{CaStore, InitOptions};
use esm_identity::{SpiffeId, TrustDomain};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const WEB: &str = "spiffe://example.org/web";
const DB: &str = "spiffe://example.org/db";

struct Agent {
    _dir: tempfile::TempDir,
    channel: Channel,
    sock: std::path::PathBuf,
    ca_tx: watch::Sender<Arc<CaMaterial>>,
    store: CaStore,
    metrics: Arc<AgentMetrics>,
    _stop: watch::Sender<bool>,
}

fn entry(spiffe: &str, sels: &[String], ttl: Option<u64>) -> Entry {
    Entry {
        id: spiffe.into(),
        spiffe_id: SpiffeId::parse(spiffe).unwrap(),
        selectors: sels.iter().map(|s| Selector::parse(s).unwrap()).collect(),
        ttl_secs: ttl,
        dns_names: vec![],
        created_at: String::new(),
    }
}

fn material(store: &CaStore) -> CaMaterial {
    let state = store.load().unwrap();
    CaMaterial::load(store, &state, time::OffsetDateTime::now_utc()).unwrap()
}

async fn connect(sock: &std::path::Path) -> tonic::transport::Channel {
    esm_agent::server::connect(sock).await.unwrap()
}

/// An agent whose entries grant this process WEB (TTL `ttl`), and DB only to another binary.
async fn agent(ttl: u64) -> Agent {
    agent_with(ttl, vec![]).await
}

/// [`agent`], with `more` entries in its set as they are, unchecked (as a store written by
/// an older esm could hold them).
async fn agent_with(ttl: u64, more: Vec<Entry>) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let store = CaStore::new(
        dir.path().join("ca"),
        Arc::new(FileKeyStore::new(dir.path().join("ca/keys"), None)),
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
    let uid = format!("unix:uid:{}", nix_uid());
    let entries = vec![
        entry(WEB, std::slice::from_ref(&uid), Some(ttl)),
        entry(DB, &[uid, "unix:path:/nonexistent/db".into()], None),
    ]
    .into_iter()
    .chain(more)
    .collect();
    let (ca_tx, ca_rx) = watch::channel(Arc::new(material(&store)));
    let (_entries_tx, entries_rx) =
        watch::channel(Arc::new(esm_agent::entry_index::EntrySet::new(entries)));
    std::mem::forget(_entries_tx);
    let metrics = Arc::new(AgentMetrics::default());
    let ctx = AgentContext::new(ca_rx, entries_rx, Default::default(), None, metrics.clone());
    let sock = dir.path().join("agent.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let (stop, mut stop_rx) = watch::channel(false);
    tokio::spawn(esm_agent::server::serve(listener, ctx, async move {
        let _ = stop_rx.changed().await;
    }));
    Agent {
        channel: connect(&sock).await,
        sock,
        _dir: dir,
        ca_tx,
        store,
        metrics,
        _stop: stop,
    }
}

fn nix_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

fn req(names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        type_url: SECRET_TYPE.into(),
        ..Default::default()
    }
}

fn secrets(r: &DiscoveryResponse) -> Vec<Secret> {
    r.resources
        .iter()
        .map(|a| Secret::decode(a.value.as_slice()).unwrap())
        .collect()
}

type Stream = (
    mpsc::Sender<DiscoveryRequest>,
    tonic::Streaming<DiscoveryResponse>,
);

async fn open(a: &Agent, first: DiscoveryRequest) -> Stream {
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.unwrap();
    let mut c = SecretDiscoveryServiceClient::new(a.channel.clone());
    let inbound = c
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, inbound)
}

async fn next(
    s: &mut tonic::Streaming<DiscoveryResponse>,
    within: Duration,
) -> Option<DiscoveryResponse> {
    tokio::time::timeout(within, s.next())
        .await
        .ok()
        .flatten()
        .map(|r| r.unwrap())
}

/// FetchSecrets of the bundle on `channel` answers it.
async fn bundle_fetched(channel: Channel) {
    let mut c = SecretDiscoveryServiceClient::new(channel);
    let r = c
        .fetch_secrets(req(&["ROOTCA"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(secrets(&r).len(), 1);
}

#[tokio::test]
async fn sotw_serves_svid_and_bundle_and_stays_quiet_on_ack_and_nack() {
    let a = agent(3600).await;
    let (tx, mut rx) = open(&a, req(&["default", "ROOTCA"])).await;
    let r = next(&mut rx, Duration::from_secs(10)).await.unwrap();
    let s = secrets(&r);
    assert_eq!(s.len(), 2);
    let Some(secret::Type::TlsCertificate(tls)) = &s[0].r#type else {
        panic!("not a TLS certificate")
    };
    assert!(tls.private_key.is_some());
    assert!(matches!(
        s[1].r#type,
        Some(secret::Type::ValidationContext(_))
    ));
    // ACK: nothing comes back.
    let mut ack = req(&["default", "ROOTCA"]);
    ack.version_info = r.version_info.clone();
    ack.response_nonce = r.nonce.clone();
    tx.send(ack.clone()).await.unwrap();
    assert!(next(&mut rx, Duration::from_millis(500)).await.is_none());
    // NACK: logged and counted, not answered with the same secret again.
    let mut nack = ack.clone();
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad cert".into(),
        ..Default::default()
    });
    tx.send(nack).await.unwrap();
    assert!(next(&mut rx, Duration::from_millis(500)).await.is_none());
    assert_eq!(a.metrics.nacks.load(Relaxed), 1);
    // A stale nonce is ignored even with new names.
    let mut stale = req(&["ROOTCA"]);
    stale.response_nonce = "0".into();
    tx.send(stale).await.unwrap();
    assert!(next(&mut rx, Duration::from_millis(300)).await.is_none());
    // New names with the current nonce: answered.
    let mut change = req(&["ROOTCA"]);
    change.response_nonce = r.nonce.clone();
    tx.send(change).await.unwrap();
    let r2 = next(&mut rx, Duration::from_secs(5)).await.unwrap();
    assert_eq!(secrets(&r2).len(), 1);
    assert_ne!(r2.nonce, r.nonce);
}

#[tokio::test]
async fn svid_refresh_and_ca_change_are_pushed() {
    let a = agent(4).await;
    let (_tx, mut rx) = open(&a, req(&["default", "ROOTCA"])).await;
    let first = next(&mut rx, Duration::from_secs(10)).await.unwrap();
    // Half of 4 s: a new SVID arrives without being asked for.
    let pushed = next(&mut rx, Duration::from_secs(5)).await.unwrap();
    assert_ne!(pushed.version_info, first.version_info);
    // A CA rotation (new material) reaches the stream within a second.
    let mut m = material(&a.store);
    m.bundle_pem.push_str("# changed\n");
    let started = std::time::Instant::now();
    a.ca_tx.send_replace(Arc::new(m));
    let after = next(&mut rx, Duration::from_secs(1)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    let roots = secrets(&after)
        .into_iter()
        .find(|s| s.name == "ROOTCA")
        .unwrap();
    let Some(secret::Type::ValidationContext(v)) = roots.r#type else {
        panic!()
    };
    let pem = match v.trusted_ca.unwrap().specifier.unwrap() {
        envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineBytes(b) => b,
        _ => panic!(),
    };
    assert!(String::from_utf8(pem).unwrap().ends_with("# changed\n"));
    // The push was timed from the change, once; the refresh before it was not counted.
    let push = a.metrics.sds_push_after_ca_change.snapshot();
    assert_eq!(push.count, 1);
    assert!(push.sum_seconds < started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn refuses_what_the_caller_is_not_entitled_to_and_malformed_requests() {
    let a = agent(3600).await;
    for (names, code) in [
        (vec![DB.to_string()], tonic::Code::PermissionDenied),
        (
            vec!["spiffe://example.org/other".into()],
            tonic::Code::PermissionDenied,
        ),
        (
            (0..10_000).map(|i| format!("n{i}")).collect(),
            tonic::Code::InvalidArgument,
        ),
    ] {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (_tx, mut rx) = open(&a, req(&names)).await;
        let err = tokio::time::timeout(Duration::from_secs(5), rx.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code(), code, "{:.60?}", names);
    }
    let mut wrong = req(&["default"]);
    wrong.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
    let (_tx, mut rx) = open(&a, wrong).await;
    let err = rx.next().await.unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(a.metrics.refused.load(Relaxed) >= 3);
}

#[tokio::test]
async fn an_entry_granting_esms_own_identity_is_never_served() {
    const AGENT: &str = "spiffe://example.org/esm/agent";
    let uid = format!("unix:uid:{}", nix_uid());
    let a = agent_with(3600, vec![entry(AGENT, &[uid], None)]).await;
    let (_tx, mut rx) = open(&a, req(&[AGENT])).await;
    let err = tokio::time::timeout(Duration::from_secs(5), rx.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("reserved"), "{}", err.message());
    assert_eq!(a.metrics.svids_issued.load(Relaxed), 0);
}

#[tokio::test]
async fn garbage_and_a_client_that_never_reads_do_not_stop_other_streams() {
    use tokio::io::AsyncWriteExt;
    let a = agent(2).await;
    let mut raw = tokio::net::UnixStream::connect(&a.sock).await.unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\xff\xff\xff\xff\xff\xff garbage")
        .await
        .unwrap();
    drop(raw);
    // A stream that never reads or ACKs while its SVID refreshes every second.
    let (_idle_tx, _idle_rx) = open(&a, req(&["default"])).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    bundle_fetched(connect(&a.sock).await).await;
    assert!(a.metrics.open_streams.load(Relaxed) >= 1);
}

#[tokio::test]
async fn delta_sends_only_changes_and_removals() {
    let a = agent(3600).await;
    let (tx, rx) = mpsc::channel(8);
    tx.send(DeltaDiscoveryRequest {
        type_url: SECRET_TYPE.into(),
        resource_names_subscribe: vec!["ROOTCA".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut c = SecretDiscoveryServiceClient::new(a.channel.clone());
    let mut s = c
        .delta_secrets(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let r = s.next().await.unwrap().unwrap();
    assert_eq!(r.resources.len(), 1);
    assert_eq!(r.resources[0].name, "ROOTCA");
    tx.send(DeltaDiscoveryRequest {
        resource_names_subscribe: vec![WEB.into()],
        response_nonce: r.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = s.next().await.unwrap().unwrap();
    let names: Vec<_> = r.resources.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, [WEB], "only the new resource");
    tx.send(DeltaDiscoveryRequest {
        resource_names_unsubscribe: vec!["ROOTCA".into()],
        response_nonce: r.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(500), s.next())
        .await
        .is_err());
}

fn serial_of(r: &DiscoveryResponse) -> Vec<u8> {
    let s = secrets(r)
        .into_iter()
        .find(|s| matches!(s.r#type, Some(secret::Type::TlsCertificate(_))))
        .unwrap();
    let Some(secret::Type::TlsCertificate(tls)) = s.r#type else {
        unreachable!()
    };
    match tls.certificate_chain.unwrap().specifier.unwrap() {
        envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineBytes(b) => b,
        _ => panic!("not inline"),
    }
}

#[tokio::test]
async fn streams_and_fetches_for_one_identity_share_one_svid() {
    let a = agent(3600).await;
    let mut chains = Vec::new();
    let mut open_streams = Vec::new();
    for _ in 0..5 {
        let (tx, mut rx) = open(&a, req(&["default"])).await;
        chains.push(serial_of(
            &next(&mut rx, Duration::from_secs(10)).await.unwrap(),
        ));
        open_streams.push((tx, rx));
    }
    let mut c = SecretDiscoveryServiceClient::new(connect(&a.sock).await);
    for _ in 0..3 {
        let r = c
            .fetch_secrets(req(&["default"]))
            .await
            .unwrap()
            .into_inner();
        chains.push(serial_of(&r));
    }
    assert!(chains.windows(2).all(|w| w[0] == w[1]), "one SVID for all");
    assert_eq!(a.metrics.svids_issued.load(Relaxed), 1);
}

/// A CA key whose backend can be made unreachable, as an HSM or a vault can be.
struct Flaky {
    key: Arc<dyn esm_ca::key_backend::KeyBackend>,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl esm_ca::key_backend::KeyBackend for Flaky {
    fn key_id(&self) -> &str {
        self.key.key_id()
    }
    fn algorithm(&self) -> KeyAlgorithm {
        self.key.algorithm()
    }
    fn public_key_raw(&self) -> &[u8] {
        self.key.public_key_raw()
    }
    fn sign(&self, msg: &[u8]) -> esm_ca::Result<Vec<u8>> {
        if self.down.load(Relaxed) {
            return Err(esm_ca::Error::KeyBackend {
                backend: "test",
                reason: "the HSM does not answer".into(),
            });
        }
        self.key.sign(msg)
    }
}

/// The agent's CA material with its signing key behind a switch.
fn flaky_material(store: &CaStore, down: &Arc<std::sync::atomic::AtomicBool>) -> CaMaterial {
    use esm_ca::key_backend::KeyStore;
    let mut m = material(store);
    let int = m.state.active_intermediate().unwrap().clone();
    let key = FileKeyStore::new(store.dir().join("keys"), None)
        .load(&int.key_id, int.algorithm)
        .unwrap();
    let flaky = Arc::new(Flaky {
        key,
        down: down.clone(),
    });
    m.signing = Arc::new(
        esm_ca::issuer::SigningCa::new(
            int.id.clone(),
            m.trust_domain.clone(),
            esm_ca::store::cert_der(&int).unwrap(),
            int.not_after,
            flaky,
        )
        .unwrap(),
    );
    m
}

#[tokio::test]
async fn a_stream_stays_open_while_the_ca_cannot_sign_and_gets_its_svid_when_it_can() {
    let a = agent(3600).await;
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    a.ca_tx
        .send_replace(Arc::new(flaky_material(&a.store, &down)));
    let (_tx, mut rx) = open(&a, req(&["default", "ROOTCA"])).await;
    // Not refused, not answered: the workload is not at fault, and nothing valid exists.
    let quiet = tokio::time::timeout(Duration::from_millis(1500), rx.next()).await;
    assert!(quiet.is_err(), "the stream answered or ended: {quiet:?}");
    assert_eq!(a.metrics.refused.load(Relaxed), 0);
    assert!(a.metrics.issuance_failures.load(Relaxed) >= 1);
    // A unary fetch cannot wait: it is told to retry, not that it is not entitled.
    let mut c = SecretDiscoveryServiceClient::new(connect(&a.sock).await);
    let err = c.fetch_secrets(req(&["default"])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{}", err.message());
    // The CA can sign again: the retry delivers, on the same stream.
    down.store(false, Relaxed);
    let r = next(&mut rx, Duration::from_secs(10)).await.unwrap();
    assert_eq!(secrets(&r).len(), 2);
    assert_eq!(a.metrics.svids_issued.load(Relaxed), 1);
    assert_eq!(a.metrics.refused.load(Relaxed), 0);
}

#[tokio::test]
async fn new_ca_material_retries_a_failed_issuance_at_once() {
    let a = agent(3600).await;
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    a.ca_tx
        .send_replace(Arc::new(flaky_material(&a.store, &down)));
    let (_tx, mut rx) = open(&a, req(&["default"])).await;
    // Let the failures pile up so the next retry is seconds away.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(a.metrics.issuance_failures.load(Relaxed) >= 2);
    // Working material (a rotation to a reachable key, say) is tried at once.
    let started = std::time::Instant::now();
    a.ca_tx.send_replace(Arc::new(material(&a.store)));
    next(&mut rx, Duration::from_secs(3)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_unknown_sds_method_is_unimplemented_and_an_oversized_request_refused() {
    let a = agent(3600).await;
    let mut grpc = tonic::client::Grpc::new(a.channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/envoy.service.secret.v3.SecretDiscoveryService/FetchEverything",
    );
    let codec = tonic_prost::ProstCodec::<DiscoveryRequest, DiscoveryResponse>::default();
    let err = grpc
        .unary(tonic::Request::new(req(&["ROOTCA"])), path, codec)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    // Over the 4 MiB a request may have: refused before it is decoded into names.
    let mut c = SecretDiscoveryServiceClient::new(a.channel.clone());
    let huge = "x".repeat(5 << 20);
    let err = c.fetch_secrets(req(&[&huge])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{}", err.message());
    // The call after it is served as usual.
    bundle_fetched(a.channel.clone()).await;
}
