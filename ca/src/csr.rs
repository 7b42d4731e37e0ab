//! PKCS#10 certificate signing requests from workloads. Only the public key of a CSR is ever
//! used; everything else in it is checked so that a request for more than the caller may
//! have is refused with a reason instead of being silently narrowed.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::FromDer;

use esm_identity::spiffe_id::SpiffeId;

/// Larger than any honest CSR (an RSA-8192 CSR is under 2 KiB).
pub const MAX_CSR_LEN: usize = 64 * 1024;
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

/// Why a CSR was refused. Shown to the requester as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    #[error("CSR is {0} bytes, more than the {MAX_CSR_LEN} allowed")]
    TooLarge(usize),
    #[error("CSR is neither DER nor a PEM \"CERTIFICATE REQUEST\"")]
    NotACsr,
    #[error("CSR is malformed: {0}")]
    Malformed(String),
    #[error("CSR signature does not verify")]
    BadSignature,
    #[error("CSR key type {0} is not supported (use ECDSA P-256/P-384 or RSA)")]
    UnsupportedKeyType(String),
    #[error("CSR key is on curve {0}; only P-256 and P-384 are supported")]
    UnsupportedCurve(String),
    #[error("CSR RSA key has {0} bits; at least {MIN_RSA_BITS} are required")]
    WeakRsaKey(usize),
    #[error("CSR RSA key has {0} bits; at most {MAX_RSA_BITS} are supported")]
    OversizedRsaKey(usize),
    #[error("CSR asks for {0} URI SANs; an X509-SVID has exactly one")]
    SeveralUriSans(usize),
    #[error("CSR asks for {asked}, but the certificate would be for {granted}")]
    DifferentSpiffeId { asked: String, granted: String },
    #[error("CSR asks for CA rights (basicConstraints CA or keyCertSign/cRLSign)")]
    AsksForCa,
}

/// A CSR whose signature verified and whose requests are all within what the CA grants.
#[derive(Debug, Clone)]
pub struct ValidatedCsr {
    /// The SubjectPublicKeyInfo DER, the only part of the CSR the certificate uses.
    pub spki_der: Vec<u8>,
    pub key_is_rsa: bool,
    /// DNS SANs the CSR asked for; the issuer grants only those its entry allows.
    pub dns_names: Vec<String>,
}

/// Accepts DER or PEM.
pub fn decode(input: &[u8]) -> Result<Vec<u8>, CsrError> {
    if input.len() > MAX_CSR_LEN {
        return Err(CsrError::TooLarge(input.len()));
    }
    if input.first() == Some(&0x30) {
        return Ok(input.to_vec());
    }
    let text = std::str::from_utf8(input).map_err(|_| CsrError::NotACsr)?;
    let (label, der) =
        pkcs8::der::pem::decode_vec(text.trim().as_bytes()).map_err(|_| CsrError::NotACsr)?;
    if label != "CERTIFICATE REQUEST" && label != "NEW CERTIFICATE REQUEST" {
        return Err(CsrError::NotACsr);
    }
    Ok(der)
}

/// Parses, verifies and checks a CSR (DER or PEM) for the SPIFFE ID the CA will grant.
pub fn validate(input: &[u8], granted: &SpiffeId) -> Result<ValidatedCsr, CsrError> {
    let der = decode(input)?;
    let (rest, csr) =
        X509CertificationRequest::from_der(&der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(format!(
            "{} bytes after the request",
            rest.len()
        )));
    }
    let spki = &csr.certification_request_info.subject_pki;
    let key_is_rsa = check_key(spki)?;
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;

    let mut uris = Vec::new();
    let mut dns_names = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::URI(u) => uris.push(u.to_string()),
                        GeneralName::DNSName(d) => dns_names.push(d.to_string()),
                        _ => {}
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) if bc.ca => return Err(CsrError::AsksForCa),
            ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() || ku.crl_sign() => {
                return Err(CsrError::AsksForCa)
            }
            ParsedExtension::ParseError { error } => {
                return Err(CsrError::Malformed(format!("extension: {error}")))
            }
            _ => {}
        }
    }
    match uris.as_slice() {
        [] => {}
        [one] if one == granted.as_str() => {}
        [one] => {
            return Err(CsrError::DifferentSpiffeId {
                asked: one.clone(),
                granted: granted.to_string(),
            })
        }
        many => return Err(CsrError::SeveralUriSans(many.len())),
    }
    Ok(ValidatedCsr {
        spki_der: spki.raw.to_vec(),
        key_is_rsa,
        dns_names,
    })
}

/// Refuses weak or unsupported keys; returns whether the key is RSA.
fn check_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<bool, CsrError> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| CsrError::Malformed("EC key without a named curve".into()))?;
        if curve != OID_EC_P256 && curve != OID_NIST_EC_P384 {
            return Err(CsrError::UnsupportedCurve(curve.to_id_string()));
        }
        Ok(false)
    } else if *alg == OID_PKCS1_RSAENCRYPTION {
        let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(CsrError::Malformed("unreadable RSA public key".into()));
        };
        let bits = bit_length(rsa.modulus);
        if bits < MIN_RSA_BITS {
            return Err(CsrError::WeakRsaKey(bits));
        }
        if bits > MAX_RSA_BITS {
            return Err(CsrError::OversizedRsaKey(bits));
        }
        Ok(true)
    } else {
        Err(CsrError::UnsupportedKeyType(alg.to_id_string()))
    }
}

fn bit_length(be: &[u8]) -> usize {
    let start = be.iter().position(|&b| b != 0).unwrap_or(be.len());
    match be.get(start) {
        Some(first) => (be.len() - start) * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

#[cfg(test)]
#[path = "csr_tests.rs"]
mod tests;
