//! PEM key documents for JWT verification: certificates (every one in the file) and
//! SubjectPublicKeyInfo public keys, RSA, EC (P-256, P-384, P-521) or Ed25519.

use x509_parser::pem::Pem;
use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::error::{Error, Result};
use crate::jwt::{Key, NamedKey};

fn bad(reason: impl std::fmt::Display) -> Error {
    Error::Jwt(reason.to_string())
}

/// ring wants the modulus and exponent without leading zero bytes.
fn unsigned(b: &[u8]) -> Vec<u8> {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b[start..].to_vec()
}

fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Key> {
    if spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 {
        let public = spki.subject_public_key.data.to_vec();
        if public.len() != 32 {
            return Err(bad("public key: an Ed25519 key is 32 bytes"));
        }
        return Ok(Key::Ed25519(public));
    }
    match spki.parsed().map_err(|e| bad(format!("public key: {e}")))? {
        PublicKey::RSA(rsa) => Ok(Key::Rsa {
            n: unsigned(rsa.modulus),
            e: unsigned(rsa.exponent),
        }),
        PublicKey::EC(point) => Ok(Key::Ec(point.data().to_vec())),
        _ => Err(bad("public key: neither RSA, EC nor Ed25519")),
    }
}

/// Every key in a PEM document; a document with none is an error.
pub fn parse(text: &str) -> Result<Vec<NamedKey>> {
    let mut keys = Vec::new();
    for pem in Pem::iter_from_buffer(text.as_bytes()) {
        let pem = pem.map_err(|e| bad(format!("PEM: {e}")))?;
        let key = match pem.label.as_str() {
            "CERTIFICATE" => {
                let (_, cert) = X509Certificate::from_der(&pem.contents)
                    .map_err(|e| bad(format!("certificate: {e}")))?;
                from_spki(cert.public_key())?
            }
            "PUBLIC KEY" => {
                let (_, spki) = SubjectPublicKeyInfo::from_der(&pem.contents)
                    .map_err(|e| bad(format!("public key: {e}")))?;
                from_spki(&spki)?
            }
            other => return Err(bad(format!("PEM: unsupported block {other:?}"))),
        };
        keys.push(NamedKey {
            kid: None,
            alg: None,
            key,
        });
    }
    if keys.is_empty() {
        return Err(bad("no PEM certificate, public key or JWKS found"));
    }
    Ok(keys)
}
