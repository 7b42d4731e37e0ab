//! An mTLS listener with an allow-list, over real TCP with a rustls client: esm presents its
//! own SVID, an SVID whose SPIFFE ID is listed is served, and one that is not, or a
//! certificate from another CA, fails the handshake and is counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use esm_agent::context::AgentMetrics;
use esm_agent::mtls::{AllowedPeers, Credentials, Listener};
use esm_agent::mtls_peers::{peer_spiffe_id, refusal_counts};
use esm_agent::subscriptions::Subscriptions;
use esm_agent::svid_cache::SvidCache;
use esm_ca::issuer::{IssuancePolicy, IssuedSvid, LeafKey, OwnIdentity, SvidRequest};
use esm_ca::key_backend::file::FileKeyStore;
use esm_ca::key_backend::KeyAlgorithm;
use esm_ca::material::CaMaterial;
use esm_ca::rotation::RotationPolicy;
use esm_ca::store::{CaStore, InitOptions};
use esm_identity::{SpiffeId, TrustDomain};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;

const ENVOY: &str = "spiffe://example.org/ns/edge/sa/envoy";
const OTHER: &str = "spiffe://example.org/ns/edge/sa/other";
const NAME: &str = "test_allowed_peers";

fn ca(dir: &std::path::Path) -> CaMaterial {
    let store = CaStore::new(
        dir.join("ca"),
        Arc::new(FileKeyStore::new(dir.join("ca/keys"), None)),
    );
    let now = time::OffsetDateTime::now_utc();
    let init = InitOptions {
        trust_domain: TrustDomain::parse("example.org").unwrap(),
        algorithm: KeyAlgorithm::EcP256,
        upstream: None,
    };
    store.init(init, &RotationPolicy::default(), now).unwrap();
    CaMaterial::load(&store, &store.load().unwrap(), now).unwrap()
}

fn svid(ca: &CaMaterial, id: &str) -> IssuedSvid {
    let id = SpiffeId::parse(id).unwrap();
    let req = SvidRequest {
        spiffe_id: &id,
        ttl: None,
        dns_names: &[],
        key: LeafKey::Generate,
    };
    ca.issue(
        &IssuancePolicy::default(),
        req,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap()
}

/// The chain to the bundle, as webpki checks it; the name is esm's SPIFFE ID, which the
/// test reads itself (an SVID carries no DNS name).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                ..
            }))
            | Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName)) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Connects with `client`'s SVID; the server's SPIFFE ID and what it sent, or `None` when
/// the connection was refused.
async fn call(port: u16, bundle: &CaMaterial, client: &IssuedSvid) -> Option<(String, Vec<u8>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for r in bundle.bundle_der() {
        roots.add(CertificateDer::from(r.clone())).unwrap();
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = vec![
        CertificateDer::from(client.cert_der.clone()),
        CertificateDer::from(client.intermediate_der.clone()),
    ];
    let key = client.private_key.as_ref().unwrap().pkcs8_der().to_vec();
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
        .with_client_auth_cert(chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)))
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = ServerName::try_from("esm").unwrap();
    let mut tls = connector.connect(name, tcp).await.ok()?;
    let server_id = {
        let (_, conn) = tls.get_ref();
        peer_spiffe_id(conn.peer_certificates()?.first()?)?.to_string()
    };
    // TLS 1.3: the server judges the client's certificate after the client has finished;
    // a refusal arrives as an alert on the first read.
    tls.write_all(b"hello").await.ok()?;
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.ok()?;
    Some((server_id, got))
}

#[tokio::test]
async fn an_allowed_svid_is_served_and_any_other_certificate_fails_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let material = Arc::new(ca(dir.path()));
    let (_ca_tx, ca_rx) = tokio::sync::watch::channel(material.clone());
    let svids = SvidCache::new(
        ca_rx.clone(),
        IssuancePolicy::default(),
        None,
        Arc::new(AgentMetrics::default()),
    );
    let listener = Listener {
        name: NAME,
        own: OwnIdentity::Authz,
        peers: Some(AllowedPeers::new([SpiffeId::parse(ENVOY).unwrap()])),
    };
    let mut subs = Subscriptions::default();
    let creds = Credentials::new(&svids, &ca_rx, listener, &mut subs)
        .await
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let mut incoming = esm_agent::mtls::incoming(esm_agent::mtls::tcp_accepted(tcp), creds);
    tokio::spawn(async move {
        while let Some(Ok(mut conn)) = incoming.next().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 5];
                if conn.0.read_exact(&mut buf).await.is_ok() {
                    let _ = conn.0.write_all(b"served").await;
                    let _ = conn.0.shutdown().await;
                }
            });
        }
    });

    let allowed = call(port, &material, &svid(&material, ENVOY)).await;
    assert_eq!(
        allowed,
        Some((
            "spiffe://example.org/esm/authz".to_owned(),
            b"served".to_vec()
        ))
    );
    assert_eq!(call(port, &material, &svid(&material, OTHER)).await, None);
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign = ca(foreign_dir.path());
    assert_eq!(call(port, &material, &svid(&foreign, ENVOY)).await, None);

    // Counted by the handshake's task, which may finish just after the client saw the alert.
    let counts = || {
        refusal_counts()
            .into_iter()
            .find(|(n, _)| *n == NAME)
            .map(|(_, c)| c)
            .unwrap()
    };
    for _ in 0..50 {
        if counts().handshakes_failed == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(counts().peers_refused, 1);
    assert_eq!(counts().handshakes_failed, 2);
}
