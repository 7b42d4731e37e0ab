//! The optional TCP listener of the agent: the same SDS and Workload API over mutual TLS,
//! for Envoys that cannot reach the Unix socket (another host, another network namespace).
//! The caller proves an X509-SVID of this trust domain; its SPIFFE ID becomes the selector
//! `spiffe:<id>`. The listener's own certificate is an SVID esm issues itself
//! (`spiffe://<td>/esm/agent`), re-issued at half its life and on every CA change, and the
//! roots that client certificates must chain to follow the CA the same way.

use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

use esm_ca::material::CaMaterial;
use esm_identity::SpiffeId;

use esm_ca::issuer::IssuedSvid;

use super::context::AgentContext;
use super::subscriptions::{NotReady, Subscriptions};
use super::svid_cache::{Opener, SvidSpec};
use super::wake::{Follow, Wake};
use crate::error::{Error, Result};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls(e: impl std::fmt::Display) -> Error {
    Error::Config(format!("agent TLS: {e}"))
}

/// The listener's certificate and the client verifier, both swapped as the CA changes.
#[derive(Debug)]
pub struct Credentials {
    key: RwLock<Arc<CertifiedKey>>,
    verifier: RwLock<Arc<dyn ClientCertVerifier>>,
}

/// The listener's SVID (esm's own, held in the SVID cache like any other) and the verifier
/// of client certificates for `ca`'s bundle.
fn build(
    ca: &CaMaterial,
    svid: &IssuedSvid,
) -> Result<(CertifiedKey, Arc<dyn ClientCertVerifier>)> {
    let key = svid
        .private_key
        .as_ref()
        .ok_or_else(|| Error::Bug("generated SVID without a key".into()))?;
    let chain = vec![
        CertificateDer::from(svid.cert_der.clone()),
        CertificateDer::from(svid.intermediate_der.clone()),
    ];
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec()));
    let certified = CertifiedKey::from_der(chain, der, &provider()).map_err(tls)?;
    let mut roots = RootCertStore::empty();
    for r in ca.bundle_der() {
        roots.add(CertificateDer::from(r.clone())).map_err(tls)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(tls)?;
    Ok((certified, verifier))
}

/// Who holds the listener's SVID, for the cache.
fn opener() -> Opener {
    Opener {
        actor: "esm:agent".into(),
        via: "agent",
    }
}

/// How long the listener waits for its first certificate before it gives up.
const FIRST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The listener's SVID as held now.
fn own_svid(subs: &mut Subscriptions) -> Result<Arc<IssuedSvid>, NotReady> {
    let mut held = subs.current()?;
    held.pop().map(|(_, svid)| svid).ok_or(NotReady::Pending)
}

impl Credentials {
    /// Waits for the listener's first SVID and builds the credentials; `subs` then follows
    /// that SVID for [`Credentials::run`].
    pub async fn new(ctx: &AgentContext, subs: &mut Subscriptions) -> Result<Arc<Self>> {
        subs.keep(&ctx.svids, &[SvidSpec::Agent], &opener());
        let deadline = tokio::time::Instant::now() + FIRST_WAIT;
        let svid = loop {
            match own_svid(subs) {
                Ok(svid) => break svid,
                Err(NotReady::Pending) => {
                    if tokio::time::timeout_at(deadline, subs.changed())
                        .await
                        .is_err()
                    {
                        return Err(Error::CaUnavailable(
                            "no listener certificate in time".into(),
                        ));
                    }
                }
                Err(NotReady::Unavailable(why) | NotReady::Refused(why)) => {
                    return Err(Error::CaUnavailable(why))
                }
            }
        };
        let (key, verifier) = build(&ctx.ca.borrow(), &svid)?;
        Ok(Arc::new(Self {
            key: RwLock::new(Arc::new(key)),
            verifier: RwLock::new(verifier),
        }))
    }

    fn refresh(&self, ca: &CaMaterial, svid: &IssuedSvid) -> Result<()> {
        let (key, verifier) = build(ca, svid)?;
        if let Ok(mut k) = self.key.write() {
            *k = Arc::new(key);
        }
        if let Ok(mut v) = self.verifier.write() {
            *v = verifier;
        }
        Ok(())
    }

    fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        self.verifier
            .read()
            .map(|v| v.clone())
            .map_err(|_| rustls::Error::General("verifier lock poisoned".into()))
    }

    /// Follows the listener's SVID (renewed at half its life and on a new signing CA by the
    /// cache) and the CA's bundle, until the CA channel closes. While the cache cannot
    /// renew, the certificate held is kept.
    pub async fn run(self: Arc<Self>, ctx: AgentContext, mut subs: Subscriptions) {
        let mut follow = Follow::ca_only(&ctx);
        loop {
            if let Wake::Closed = follow.change_only(subs.changed()).await {
                return;
            }
            let rebuilt = match own_svid(&mut subs) {
                Ok(svid) => self.refresh(&follow.ca(), &svid),
                Err(NotReady::Pending) => continue,
                Err(NotReady::Unavailable(why) | NotReady::Refused(why)) => {
                    Err(Error::CaUnavailable(why))
                }
            };
            if let Err(e) = rebuilt {
                tracing::error!(error = %e, "agent TLS certificate not renewed; the one held is kept");
            }
        }
    }
}

impl ResolvesServerCert for Credentials {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key.read().ok().map(|k| k.clone())
    }
}

impl ClientCertVerifier for Credentials {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier()
            .map(|v| v.supported_verify_schemes())
            .unwrap_or_default()
    }
}

/// A server config that asks every client for an SVID and serves h2 (gRPC).
pub fn server_config(creds: Arc<Credentials>) -> rustls::ServerConfig {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_client_cert_verifier(creds.clone())
                .with_cert_resolver(creds)
        })
        .unwrap_or_else(|_| unreachable_config());
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    cfg
}

/// ring's default provider supports the default protocol versions; this is never reached.
#[allow(clippy::panic)]
fn unreachable_config() -> rustls::ServerConfig {
    panic!("ring provider without TLS 1.2/1.3")
}

/// The one URI SAN of a client certificate, as a SPIFFE ID; `None` for anything else.
pub fn peer_spiffe_id(cert: &[u8]) -> Option<SpiffeId> {
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    let mut uris = cert
        .extensions()
        .iter()
        .filter_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => Some(
                san.general_names
                    .iter()
                    .filter_map(|g| match g {
                        GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        });
    let all: Vec<String> = uris.next()?;
    match all.as_slice() {
        [one] => SpiffeId::parse(one).ok(),
        _ => None,
    }
}

/// What tonic sees of a TLS connection: the peer's SPIFFE ID.
#[derive(Debug, Clone)]
pub struct PeerSpiffeId(pub Option<SpiffeId>);

/// An accepted mutual-TLS connection.
pub struct AgentTls(pub TlsStream<tokio::net::TcpStream>);

impl Connected for AgentTls {
    type ConnectInfo = PeerSpiffeId;

    fn connect_info(&self) -> PeerSpiffeId {
        let (_, conn) = self.0.get_ref();
        PeerSpiffeId(
            conn.peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| peer_spiffe_id(c)),
        )
    }
}

impl AsyncRead for AgentTls {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgentTls {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Accepts TCP connections and completes each handshake on its own task (bounded to 10 s),
/// so a slow or hostile client never holds up the others.
pub fn incoming(
    listener: tokio::net::TcpListener,
    creds: Arc<Credentials>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<AgentTls>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(creds)));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "agent TCP accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            // SDS pushes are small frames: Nagle would hold one back for the peer's ACK.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(peer = %peer, error = %e, "agent TCP_NODELAY not set");
            }
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let timeout = std::time::Duration::from_secs(10);
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(AgentTls(tls))).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(peer = %peer, error = %e, "agent TLS handshake refused")
                    }
                    Err(_) => tracing::info!(peer = %peer, "agent TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cert_with(uris: &[&str]) -> Vec<u8> {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = uris
            .iter()
            .map(|u| rcgen::SanType::URI((*u).try_into().unwrap()))
            .collect();
        p.self_signed(&kp).unwrap().der().to_vec()
    }

    #[test]
    fn a_client_certificate_names_exactly_one_spiffe_id() {
        let one = cert_with(&["spiffe://example.org/a"]);
        assert_eq!(
            peer_spiffe_id(&one).unwrap().as_str(),
            "spiffe://example.org/a"
        );
        assert!(peer_spiffe_id(&cert_with(&[])).is_none());
        assert!(peer_spiffe_id(&cert_with(&[
            "spiffe://example.org/a",
            "spiffe://example.org/b"
        ]))
        .is_none());
        assert!(peer_spiffe_id(&cert_with(&["https://example.org/a"])).is_none());
        assert!(peer_spiffe_id(b"garbage").is_none());
    }
}
