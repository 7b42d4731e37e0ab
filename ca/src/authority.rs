//! Certificate templates for the CA's own certificates: the root and the intermediate
//! signing CAs. Both carry the trust domain's SPIFFE ID as their one URI SAN, as SPIRE's do,
//! so a verifier can tell which trust domain a chain belongs to.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose, SanType,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::error::{Error, Result};
use crate::key_backend::{KeyBackend, Signer};
use esm_identity::spiffe_id::TrustDomain;

/// How far back `notBefore` is set so that peers with slightly slow clocks accept a new
/// certificate at once.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::seconds(30);

/// A fresh positive serial number with 127 random bits (RFC 5280 §4.1.2.2: ≤ 20 octets,
/// positive; CA/B guidance: ≥ 64 bits of randomness).
pub fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::Bug("system random number generator failed".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never a leading zero octet, so the encoding is always 16 bytes
    Ok(SerialNumber::from_slice(&bytes))
}

pub fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

fn ca_name(td: &TrustDomain, what: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "esm");
    dn.push(DnType::OrganizationalUnitName, td.as_str());
    dn.push(DnType::CommonName, what);
    dn
}

fn ca_params(
    td: &TrustDomain,
    cn: &str,
    path_len: Option<u8>,
    now: OffsetDateTime,
    ttl: Duration,
) -> Result<CertificateParams> {
    // Certificates hold whole seconds; keep the state's record identical to the certificate.
    let now = whole_seconds(now);
    let mut p = CertificateParams::default();
    p.distinguished_name = ca_name(td, cn);
    p.serial_number = Some(random_serial()?);
    p.not_before = now - CLOCK_SKEW_ALLOWANCE;
    p.not_after = now + ttl;
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.subject_alt_names =
        vec![SanType::URI(td.id().as_str().try_into().map_err(|_| {
            Error::Bug("trust domain ID is not IA5".into())
        })?)];
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// A newly made CA certificate, DER.
pub struct NewCaCert {
    pub der: Vec<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Makes a self-signed root.
pub fn make_root(
    td: &TrustDomain,
    key: &Arc<dyn KeyBackend>,
    now: OffsetDateTime,
    ttl: Duration,
) -> Result<NewCaCert> {
    let mut p = ca_params(td, &format!("esm root CA {td}"), Some(1), now, ttl)?;
    // A self-signed certificate's AKI would only repeat its SKI.
    p.use_authority_key_identifier_extension = false;
    let cert = p.self_signed(&Signer(key.clone()))?;
    Ok(NewCaCert {
        der: cert.der().to_vec(),
        not_before: p.not_before,
        not_after: p.not_after,
    })
}

/// Makes an intermediate signing CA under `parent`, never outliving it.
pub fn make_intermediate(
    td: &TrustDomain,
    key: &Arc<dyn KeyBackend>,
    parent_der: &[u8],
    parent_key: &Arc<dyn KeyBackend>,
    parent_not_after: OffsetDateTime,
    now: OffsetDateTime,
    ttl: Duration,
) -> Result<NewCaCert> {
    let mut p = ca_params(td, &format!("esm signing CA {td}"), Some(0), now, ttl)?;
    p.not_after = p.not_after.min(parent_not_after);
    let issuer = rcgen::Issuer::from_ca_cert_der(&parent_der.into(), Signer(parent_key.clone()))?;
    let cert = p.signed_by(&Signer(key.clone()), &issuer)?;
    Ok(NewCaCert {
        der: cert.der().to_vec(),
        not_before: p.not_before,
        not_after: p.not_after,
    })
}
