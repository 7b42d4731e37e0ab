//! Pure conversions between what Key Vault speaks (JWK, JWS algorithm names, raw `r‖s`
//! signatures) and what X.509 wants (uncompressed points, PKCS#1 keys, DER ECDSA signatures).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::key_backend::KeyAlgorithm;

/// The JWS algorithm esm asks the vault to sign with. RSA uses RS256 (PKCS#1 v1.5) because the
/// CA's RSA certificates are `sha256WithRSAEncryption`; a PS256 signature would not verify
/// under that algorithm identifier.
pub fn jws_alg(alg: KeyAlgorithm) -> &'static str {
    match alg {
        KeyAlgorithm::EcP256 => "ES256",
        KeyAlgorithm::EcP384 => "ES384",
        KeyAlgorithm::Rsa3072 => "RS256",
    }
}

/// The body of a create-key request for `alg`.
pub fn create_body(alg: KeyAlgorithm) -> serde_json::Value {
    match alg {
        KeyAlgorithm::EcP256 => {
            serde_json::json!({"kty": "EC", "crv": "P-256", "key_ops": ["sign", "verify"]})
        }
        KeyAlgorithm::EcP384 => {
            serde_json::json!({"kty": "EC", "crv": "P-384", "key_ops": ["sign", "verify"]})
        }
        KeyAlgorithm::Rsa3072 => {
            serde_json::json!({"kty": "RSA", "key_size": 3072, "key_ops": ["sign", "verify"]})
        }
    }
}

/// The digest the vault signs: SHA-256 for P-256 and RSA, SHA-384 for P-384.
pub fn digest(alg: KeyAlgorithm, msg: &[u8]) -> Vec<u8> {
    let d = match alg {
        KeyAlgorithm::EcP384 => &ring::digest::SHA384,
        KeyAlgorithm::EcP256 | KeyAlgorithm::Rsa3072 => &ring::digest::SHA256,
    };
    ring::digest::digest(d, msg).as_ref().to_vec()
}

fn field_len(alg: KeyAlgorithm) -> Option<usize> {
    match alg {
        KeyAlgorithm::EcP256 => Some(32),
        KeyAlgorithm::EcP384 => Some(48),
        KeyAlgorithm::Rsa3072 => None,
    }
}

/// The public key of a JWK as X.509's subjectPublicKey: `04‖x‖y` for EC, a PKCS#1
/// RSAPublicKey for RSA. Refuses a key of another type, curve or size than `alg`.
pub fn public_key_raw(jwk: &serde_json::Value, alg: KeyAlgorithm) -> Result<Vec<u8>, String> {
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let s = jwk
            .get(name)
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("the key has no \"{name}\""))?;
        URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| format!("the key's \"{name}\" is not base64url"))
    };
    let kty = jwk.get("kty").and_then(|v| v.as_str()).unwrap_or("");
    match field_len(alg) {
        Some(n) => {
            let want = if n == 32 { "P-256" } else { "P-384" };
            let crv = jwk.get("crv").and_then(|v| v.as_str()).unwrap_or("");
            if !kty.starts_with("EC") || crv != want {
                return Err(format!("expected an EC {want} key, found {kty} {crv}"));
            }
            let (x, y) = (field("x")?, field("y")?);
            let mut out = vec![4u8];
            out.extend(left_pad(&x, n)?);
            out.extend(left_pad(&y, n)?);
            Ok(out)
        }
        None => {
            if !kty.starts_with("RSA") {
                return Err(format!("expected an RSA key, found {kty}"));
            }
            let (n, e) = (field("n")?, field("e")?);
            if strip_zeros(&n).len() != 3072 / 8 {
                return Err("the RSA key is not 3072 bits".into());
            }
            Ok(der_seq(&[der_uint(&n), der_uint(&e)]))
        }
    }
}

fn left_pad(v: &[u8], n: usize) -> Result<Vec<u8>, String> {
    let v = strip_zeros(v);
    if v.len() > n {
        return Err("a coordinate is longer than the curve's field".into());
    }
    let mut out = vec![0u8; n - v.len()];
    out.extend_from_slice(v);
    Ok(out)
}

/// The vault's signature in the form X.509 carries: ECDSA's raw `r‖s` becomes the DER
/// `SEQUENCE { INTEGER r, INTEGER s }`; an RSA signature is used as it is.
pub fn signature_for_x509(alg: KeyAlgorithm, raw: &[u8]) -> Result<Vec<u8>, String> {
    let Some(n) = field_len(alg) else {
        return if raw.len() == 3072 / 8 {
            Ok(raw.to_vec())
        } else {
            Err(format!(
                "RSA signature of {} bytes, expected 384",
                raw.len()
            ))
        };
    };
    if raw.len() != 2 * n {
        return Err(format!(
            "ECDSA signature of {} bytes, expected {} (r‖s)",
            raw.len(),
            2 * n
        ));
    }
    let (r, s) = raw.split_at(n);
    if strip_zeros(r).is_empty() || strip_zeros(s).is_empty() {
        return Err("ECDSA signature with r or s zero".into());
    }
    Ok(der_seq(&[der_uint(r), der_uint(s)]))
}

fn strip_zeros(v: &[u8]) -> &[u8] {
    let first = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    &v[first..]
}

/// A DER INTEGER of the unsigned big-endian `v`: minimal, with a 0 byte when the top bit is set.
fn der_uint(v: &[u8]) -> Vec<u8> {
    let v = strip_zeros(v);
    let mut body = Vec::with_capacity(v.len() + 1);
    if v.first().is_none_or(|&b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(v);
    der_tlv(0x02, &body)
}

fn der_seq(items: &[Vec<u8>]) -> Vec<u8> {
    der_tlv(0x30, &items.concat())
}

fn der_tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = body.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let lb = strip_zeros(&bytes);
        out.push(0x80 | lb.len() as u8);
        out.extend_from_slice(lb);
    }
    out.extend_from_slice(body);
    out
}

/// Checks a signature against the key before the CA uses it, so a vault that answers with
/// another key's signature (a wrong version, a stale cache) yields an error, not a certificate
/// that no relying party accepts.
pub fn verify(alg: KeyAlgorithm, public_raw: &[u8], msg: &[u8], sig_x509: &[u8]) -> bool {
    use ring::signature as s;
    let algo: &dyn s::VerificationAlgorithm = match alg {
        KeyAlgorithm::EcP256 => &s::ECDSA_P256_SHA256_ASN1,
        KeyAlgorithm::EcP384 => &s::ECDSA_P384_SHA384_ASN1,
        KeyAlgorithm::Rsa3072 => &s::RSA_PKCS1_2048_8192_SHA256,
    };
    s::UnparsedPublicKey::new(algo, public_raw)
        .verify(msg, sig_x509)
        .is_ok()
}
