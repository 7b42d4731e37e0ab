//! X509-SVID issuance: a leaf for exactly one SPIFFE ID, signed by the active intermediate.

use std::sync::Arc;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    PublicKeyData, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::authority::{random_serial, whole_seconds, CLOCK_SKEW_ALLOWANCE};
use crate::csr::ValidatedCsr;
use crate::error::{Error, Result};
use crate::key_backend::{file::generate_pkcs8, KeyAlgorithm, KeyBackend, Signer};
use esm_identity::spiffe_id::{SpiffeId, TrustDomain};

/// TTL limits for SVIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuancePolicy {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// The algorithm of keys esm makes for workloads.
    pub leaf_algorithm: KeyAlgorithm,
}

impl Default for IssuancePolicy {
    fn default() -> Self {
        Self {
            default_ttl: Duration::hours(1),
            max_ttl: Duration::hours(24),
            leaf_algorithm: KeyAlgorithm::EcP256,
        }
    }
}

/// Where the leaf's key comes from.
pub enum LeafKey {
    /// esm makes the key; the private key is returned with the certificate.
    Generate,
    /// The workload made the key and sent a CSR; only its public key is used.
    Csr(ValidatedCsr),
}

/// What to issue.
pub struct SvidRequest<'a> {
    pub spiffe_id: &'a SpiffeId,
    /// `None` takes the policy's default.
    pub ttl: Option<Duration>,
    pub dns_names: &'a [String],
    pub key: LeafKey,
}

/// The intermediate that signs, with everything needed to sign without re-parsing it.
pub struct SigningCa {
    pub id: String,
    pub trust_domain: TrustDomain,
    pub cert_der: Vec<u8>,
    pub not_after: OffsetDateTime,
    issuer: rcgen::Issuer<'static, Signer>,
}

impl SigningCa {
    pub fn new(
        id: String,
        trust_domain: TrustDomain,
        cert_der: Vec<u8>,
        not_after: OffsetDateTime,
        key: Arc<dyn KeyBackend>,
    ) -> Result<Self> {
        let issuer = rcgen::Issuer::from_ca_cert_der(&cert_der.as_slice().into(), Signer(key))?;
        Ok(Self {
            id,
            trust_domain,
            cert_der,
            not_after,
            issuer,
        })
    }
}

/// A private key made by esm for a workload. No `Debug`, never logged.
pub struct LeafPrivateKey(Vec<u8>);

impl LeafPrivateKey {
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.0
    }

    pub fn to_pem(&self) -> String {
        esm_identity::pem::encode("PRIVATE KEY", &self.0)
    }
}

/// An issued X509-SVID.
pub struct IssuedSvid {
    pub spiffe_id: SpiffeId,
    pub serial_hex: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub cert_der: Vec<u8>,
    /// The intermediate that signed it, DER; the chain sent to peers is leaf + this.
    pub intermediate_der: Vec<u8>,
    pub signed_by: String,
    pub private_key: Option<LeafPrivateKey>,
}

impl IssuedSvid {
    /// Leaf first, then the intermediate: what `svid.pem` holds and what peers need.
    pub fn chain_pem(&self) -> String {
        let mut s = esm_identity::pem::encode("CERTIFICATE", &self.cert_der);
        s.push_str(&esm_identity::pem::encode(
            "CERTIFICATE",
            &self.intermediate_der,
        ));
        s
    }
}

/// Issues an X509-SVID for a workload: `req` at `now`.
///
/// The TTL is the requested one (or the default), capped by the policy's maximum and by the
/// signing CA's remaining life, so that no SVID outlives its issuer. esm's own identities
/// (under `/esm`) are refused here, whoever asks (`cert issue`, a registration entry over
/// SDS): only [`issue_own`], crate-private, makes them, and outside this crate only
/// [`crate::material::CaMaterial::issue_own_svid`] reaches it, for esm's own listeners.
pub fn issue(
    ca: &SigningCa,
    policy: &IssuancePolicy,
    req: SvidRequest<'_>,
    now: OffsetDateTime,
) -> Result<IssuedSvid> {
    if req.spiffe_id.is_reserved_for_esm() {
        return Err(Error::Reserved(req.spiffe_id.clone()));
    }
    sign(ca, policy, req, now)
}

/// An identity esm holds itself, never a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OwnIdentity {
    /// The agent's TCP listener: `spiffe://<td>/esm/agent`, which remote Envoys pin.
    Agent,
    /// The ext_authz port over mutual TLS: `spiffe://<td>/esm/authz`, which Envoys pin.
    Authz,
}

impl OwnIdentity {
    pub fn spiffe_id(self, td: &TrustDomain) -> Result<SpiffeId> {
        let path = match self {
            Self::Agent => "agent",
            Self::Authz => "authz",
        };
        let id = SpiffeId::parse(&format!(
            "spiffe://{td}{}/{path}",
            esm_identity::spiffe_id::RESERVED_PATH
        ))?;
        debug_assert!(id.is_reserved_for_esm());
        Ok(id)
    }
}

/// Issues esm's own SVID `who` (key made here, default TTL): the one way to a reserved
/// identity, crate-private so that no path taking a caller's SPIFFE ID (`cert issue`, an
/// entry) can reach it.
pub(crate) fn issue_own(
    ca: &SigningCa,
    policy: &IssuancePolicy,
    who: OwnIdentity,
    now: OffsetDateTime,
) -> Result<IssuedSvid> {
    let id = who.spiffe_id(&ca.trust_domain)?;
    sign(
        ca,
        policy,
        SvidRequest {
            spiffe_id: &id,
            ttl: None,
            dns_names: &[],
            key: LeafKey::Generate,
        },
        now,
    )
}

fn sign(
    ca: &SigningCa,
    policy: &IssuancePolicy,
    req: SvidRequest<'_>,
    now: OffsetDateTime,
) -> Result<IssuedSvid> {
    // Signing is synchronous: the guard never spans an await.
    let _span = tracing::info_span!(
        "ca.issue",
        spiffe.id = %req.spiffe_id,
        ca.id = %ca.id,
        svid.ttl_secs = req.ttl.map(|t| t.whole_seconds()),
    )
    .entered();
    if req.spiffe_id.trust_domain() != &ca.trust_domain {
        return Err(Error::Refused(format!(
            "{} is not in trust domain {}",
            req.spiffe_id, ca.trust_domain
        )));
    }
    if req.spiffe_id.is_trust_domain_id() {
        return Err(Error::Refused(format!(
            "{} names the trust domain itself; a workload SPIFFE ID needs a path",
            req.spiffe_id
        )));
    }
    let now = whole_seconds(now);
    let ttl = req.ttl.unwrap_or(policy.default_ttl);
    if ttl <= Duration::ZERO {
        return Err(Error::Refused("TTL must be positive".into()));
    }
    let not_after = (now + ttl.min(policy.max_ttl)).min(whole_seconds(ca.not_after));
    if not_after <= now {
        return Err(Error::SigningCaExpired(ca.id.clone()));
    }

    let mut p = CertificateParams::default();
    let serial = random_serial()?;
    let serial_hex = hex(&serial.to_bytes());
    p.serial_number = Some(serial);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "esm");
    dn.push(DnType::OrganizationalUnitName, ca.trust_domain.as_str());
    p.distinguished_name = dn;
    p.not_before = now - CLOCK_SKEW_ALLOWANCE;
    p.not_after = not_after;
    p.is_ca = IsCa::ExplicitNoCa;
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    let uri = req
        .spiffe_id
        .as_str()
        .try_into()
        .map_err(|_| Error::Bug("SPIFFE ID is not IA5".into()))?;
    p.subject_alt_names = vec![SanType::URI(uri)];
    for name in req.dns_names {
        let dns = name
            .as_str()
            .try_into()
            .map_err(|_| Error::Refused(format!("{name:?} is not a DNS name")))?;
        p.subject_alt_names.push(SanType::DnsName(dns));
    }

    let (cert, private_key, rsa) = match req.key {
        LeafKey::Generate => {
            let der = generate_pkcs8(policy.leaf_algorithm)?;
            let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
                &der.as_slice().into(),
                policy.leaf_algorithm.rcgen(),
            )?;
            let rsa = policy.leaf_algorithm.is_rsa();
            p.key_usages = leaf_key_usages(rsa);
            (
                p.signed_by(&kp, &ca.issuer)?,
                Some(LeafPrivateKey(der)),
                rsa,
            )
        }
        LeafKey::Csr(csr) => {
            let spki = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der)
                .map_err(|e| Error::Bug(format!("validated CSR key unreadable: {e}")))?;
            debug_assert!(!spki.der_bytes().is_empty());
            p.key_usages = leaf_key_usages(csr.key_is_rsa);
            (p.signed_by(&spki, &ca.issuer)?, None, csr.key_is_rsa)
        }
    };
    tracing::debug!(
        spiffe.id = %req.spiffe_id,
        svid.serial = %serial_hex,
        svid.not_after = %not_after,
        key.rsa = rsa,
        ca.id = %ca.id,
        "issued X509-SVID"
    );
    Ok(IssuedSvid {
        spiffe_id: req.spiffe_id.clone(),
        serial_hex,
        not_before: p.not_before,
        not_after,
        cert_der: cert.der().to_vec(),
        intermediate_der: ca.cert_der.clone(),
        signed_by: ca.id.clone(),
        private_key,
    })
}

fn leaf_key_usages(rsa: bool) -> Vec<KeyUsagePurpose> {
    let mut v = vec![KeyUsagePurpose::DigitalSignature];
    if rsa {
        v.push(KeyUsagePurpose::KeyEncipherment);
    }
    v
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[path = "issuer_tests.rs"]
mod tests;
