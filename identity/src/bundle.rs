//! Trust bundles: the roots a relying party trusts, as PEM and in the SPIFFE bundle format
//! (a JWK set whose keys carry `use: x509-svid` and the certificate in `x5c`).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};
use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::error::{Error, Result};
use crate::spiffe_id::TrustDomain;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    pub trust_domain: TrustDomain,
    /// Bumped on every change of the root set (`spiffe_sequence`).
    pub sequence: u64,
    /// How often relying parties should re-fetch, in seconds (`spiffe_refresh_hint`).
    pub refresh_hint_secs: u64,
    pub roots_der: Vec<Vec<u8>>,
}

impl TrustBundle {
    pub fn to_pem(&self) -> String {
        self.roots_der
            .iter()
            .map(|d| crate::pem::encode("CERTIFICATE", d))
            .collect()
    }

    /// The SPIFFE bundle format (SPIFFE Trust Domain and Bundle spec, §4).
    pub fn to_spiffe_json(&self) -> Result<Value> {
        let keys = self
            .roots_der
            .iter()
            .map(|der| jwk(der))
            .collect::<Result<Vec<_>>>()?;
        Ok(json!({
            "keys": keys,
            "spiffe_sequence": self.sequence,
            "spiffe_refresh_hint": self.refresh_hint_secs,
        }))
    }
}

fn jwk(der: &[u8]) -> Result<Value> {
    let bad = Error::UnusableRoot;
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| bad("does not parse"))?;
    let spki = cert.public_key();
    let mut key = match spki.parsed().map_err(|_| bad("has an unreadable key"))? {
        PublicKey::EC(point) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or_else(|| bad("has no curve"))?;
            let crv = if curve == OID_EC_P256 {
                "P-256"
            } else if curve == OID_NIST_EC_P384 {
                "P-384"
            } else {
                return Err(bad("is on an unsupported curve"));
            };
            let data = point.data();
            if data.first() != Some(&4) || data.len() % 2 != 1 {
                return Err(bad("has a compressed EC point"));
            }
            let (x, y) = data[1..].split_at((data.len() - 1) / 2);
            json!({"kty": "EC", "crv": crv, "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)})
        }
        PublicKey::RSA(rsa) => {
            let trim = |b: &[u8]| {
                b.iter()
                    .skip_while(|&&x| x == 0)
                    .copied()
                    .collect::<Vec<_>>()
            };
            json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(trim(rsa.modulus)), "e": URL_SAFE_NO_PAD.encode(trim(rsa.exponent))})
        }
        _ => return Err(bad("has an unsupported key type")),
    };
    key["use"] = json!("x509-svid");
    key["x5c"] = json!([STANDARD.encode(der)]);
    Ok(key)
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
