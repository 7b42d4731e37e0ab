//! esm's mutual-TLS listeners: the agent's TCP listener (SDS and the Workload API for
//! Envoys that cannot reach the Unix socket) and the ext_authz port when `authz.tls` is on.
//! The caller proves an X509-SVID of this trust domain. The listener's own certificate is
//! an SVID esm issues itself ([`OwnIdentity`]: `spiffe://<td>/esm/agent`,
//! `spiffe://<td>/esm/authz`), held in the SVID cache, re-issued at half its life and on
//! every CA change, and the roots that client certificates must chain to follow the CA the
//! same way. A listener with [`AllowedPeers`] also refuses, in the handshake, every SVID
//! whose SPIFFE ID it does not admit; the agent admits any and decides by its entries.

use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use tokio::sync::watch;

use esm_ca::issuer::{IssuedSvid, OwnIdentity};
use esm_ca::material::CaMaterial;
use esm_identity::TrustDomain;

use super::subscriptions::{NotReady, Subscriptions};
use super::svid_cache::{Opener, SvidCache, SvidSpec};
use super::wake::{Follow, Wake};
use crate::error::{Error, Result};
pub use crate::mtls_accept::{incoming, tcp_accepted, MtlsConnection, PeerLabel};
pub use crate::mtls_peers::{peer_spiffe_id, AllowedPeers, PeerSpiffeId};
use crate::mtls_peers::{register, Refusals};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One mTLS listener: its name (in logs and `/metrics`), the identity it presents, and
/// the peers it admits in the handshake (`None`: every certificate that chains to the
/// bundle, for a service that decides by the SPIFFE ID itself).
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: &'static str,
    pub own: OwnIdentity,
    pub peers: Option<AllowedPeers>,
}

impl Listener {
    /// The agent's TCP listener: any SVID of the trust domain; its entries decide.
    pub fn agent() -> Self {
        Self {
            name: "agent",
            own: OwnIdentity::Agent,
            peers: None,
        }
    }

    fn tls_error(&self, e: impl std::fmt::Display) -> Error {
        Error::Config(format!("{} TLS: {e}", self.name))
    }

    /// Who holds the listener's SVID, for the cache.
    fn opener(&self) -> Opener {
        Opener {
            actor: format!("esm:{}", self.name),
            via: self.name,
        }
    }
}

/// The roots client certificates must chain to, and their trust domain.
struct Roots {
    verifier: Arc<dyn ClientCertVerifier>,
    trust_domain: TrustDomain,
}

/// A listener's certificate and client verifier, both swapped as the CA changes.
pub struct Credentials {
    listener: Listener,
    key: RwLock<Arc<CertifiedKey>>,
    roots: RwLock<Arc<Roots>>,
    refusals: Arc<Refusals>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

/// The listener's SVID (esm's own, held in the SVID cache like any other) and the verifier
/// of client certificates for `ca`'s bundle.
fn build(listener: &Listener, ca: &CaMaterial, svid: &IssuedSvid) -> Result<(CertifiedKey, Roots)> {
    let key = svid
        .private_key
        .as_ref()
        .ok_or_else(|| Error::Bug("generated SVID without a key".into()))?;
    let chain = vec![
        CertificateDer::from(svid.cert_der.clone()),
        CertificateDer::from(svid.intermediate_der.clone()),
    ];
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec()));
    let certified =
        CertifiedKey::from_der(chain, der, &provider()).map_err(|e| listener.tls_error(e))?;
    let mut roots = RootCertStore::empty();
    for r in ca.bundle_der() {
        roots
            .add(CertificateDer::from(r.clone()))
            .map_err(|e| listener.tls_error(e))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| listener.tls_error(e))?;
    let roots = Roots {
        verifier,
        trust_domain: ca.trust_domain.clone(),
    };
    Ok((certified, roots))
}

/// How long the listener waits for its first certificate before it gives up.
const FIRST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The listener's SVID as held now.
fn own_svid(subs: &mut Subscriptions) -> Result<Arc<IssuedSvid>, NotReady> {
    let mut held = subs.current()?;
    held.pop().map(|(_, svid)| svid).ok_or(NotReady::Pending)
}

impl Credentials {
    /// Waits for the first SVID of `listener` from `svids` and builds the credentials for
    /// the CA material on `ca`; `subs` then follows that SVID for [`Credentials::run`].
    pub async fn new(
        svids: &Arc<SvidCache>,
        ca: &watch::Receiver<Arc<CaMaterial>>,
        listener: Listener,
        subs: &mut Subscriptions,
    ) -> Result<Arc<Self>> {
        subs.keep(svids, &[SvidSpec::Own(listener.own)], &listener.opener());
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
        let material = ca.borrow().clone();
        let (key, roots) = build(&listener, &material, &svid)?;
        Ok(Arc::new(Self {
            refusals: register(listener.name),
            listener,
            key: RwLock::new(Arc::new(key)),
            roots: RwLock::new(Arc::new(roots)),
        }))
    }

    fn refresh(&self, ca: &CaMaterial, svid: &IssuedSvid) -> Result<()> {
        let (key, roots) = build(&self.listener, ca, svid)?;
        if let Ok(mut k) = self.key.write() {
            *k = Arc::new(key);
        }
        if let Ok(mut r) = self.roots.write() {
            *r = Arc::new(roots);
        }
        Ok(())
    }

    /// The listener's name, for the accept loop's logs.
    pub(crate) fn name(&self) -> &'static str {
        self.listener.name
    }

    /// The listener's counters, for the accept loop.
    pub(crate) fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }

    fn roots(&self) -> Result<Arc<Roots>, rustls::Error> {
        self.roots
            .read()
            .map(|r| r.clone())
            .map_err(|_| rustls::Error::General("verifier lock poisoned".into()))
    }

    /// Follows the listener's SVID (renewed at half its life and on a new signing CA by the
    /// cache) and the CA's bundle on `ca`, until that channel closes. While the cache
    /// cannot renew, the certificate held is kept.
    pub async fn run(
        self: Arc<Self>,
        ca: watch::Receiver<Arc<CaMaterial>>,
        mut subs: Subscriptions,
    ) {
        let mut follow = Follow::material(&ca);
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
                tracing::error!(listener = self.listener.name, error = %e, "TLS certificate not renewed; the one held is kept");
            }
        }
    }

    /// The listener's own check of a client certificate that chains to the bundle: its
    /// SPIFFE ID must be one the listener admits. A refusal is logged with the ID and
    /// counted; the handshake then fails, so no request of that client is ever decided.
    fn admit(&self, end_entity: &CertificateDer<'_>, roots: &Roots) -> Result<(), rustls::Error> {
        let Some(peers) = &self.listener.peers else {
            return Ok(());
        };
        let id = peer_spiffe_id(end_entity);
        if peers.admits(id.as_ref(), &roots.trust_domain) {
            return Ok(());
        }
        self.refusals.peer_refused();
        match &id {
            Some(id) => {
                tracing::warn!(listener = self.listener.name, spiffe.id = %id, "mTLS client refused: its SPIFFE ID is not allowed on this listener");
            }
            None => {
                tracing::warn!(
                    listener = self.listener.name,
                    spiffe.id = "",
                    "mTLS client refused: its certificate does not carry exactly one SPIFFE ID"
                );
            }
        }
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
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
        let roots = self.roots()?;
        let verified = roots
            .verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        self.admit(end_entity, &roots)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots()?
            .verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots()?
            .verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.roots()
            .map(|r| r.verifier.supported_verify_schemes())
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
