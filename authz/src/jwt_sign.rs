//! `io.jwt.encode_sign` and `encode_sign_raw`: a compact JWS signed with a private JWK, so a
//! policy can pass a signed identity upstream. As in OPA, the algorithm is the header's `alg`,
//! the key is the first of a JWK or JWKS, and a payload that is not JSON is refused unless the
//! header's `typ` says it is something other than a JWT.
//!
//! Keys: RSA (RS*, PS*), EC P-256 / P-384 / P-521 (ES256 / ES384 / ES512), Ed25519 (EdDSA),
//! and `oct` secrets (HS*). Signatures are ring's, except P-521 (RustCrypto's `p521`, which
//! ring lacks).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self as s, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::jwt::MAX_KEY_LEN;

fn bad(reason: impl std::fmt::Display) -> Error {
    Error::Jwt(reason.to_string())
}

/// A JWK member, base64url-decoded.
fn member(k: &Json, field: &str) -> Result<Vec<u8>> {
    let text = k
        .get(field)
        .and_then(Json::as_str)
        .ok_or_else(|| bad(format!("signing JWK: no {field}")))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|e| bad(format!("signing JWK {field}: {e}")))
}

/// The first key of a JWK or a JWKS document.
fn first_key(jwk: &str) -> Result<Json> {
    if jwk.len() > MAX_KEY_LEN {
        return Err(bad(format!("signing key longer than {MAX_KEY_LEN} bytes")));
    }
    let v: Json = serde_json::from_str(jwk).map_err(|e| bad(format!("signing JWK: {e}")))?;
    let key = match v.get("keys") {
        Some(Json::Array(keys)) => keys
            .first()
            .cloned()
            .ok_or_else(|| bad("signing JWKS: no keys"))?,
        Some(_) => return Err(bad("signing JWKS: keys is not an array")),
        None => v,
    };
    if !key.is_object() {
        return Err(bad("signing JWK: not a JSON object"));
    }
    Ok(key)
}

fn kty(k: &Json) -> &str {
    k.get("kty").and_then(Json::as_str).unwrap_or("")
}

fn sign_rsa(k: &Json, padding: &'static dyn s::RsaEncoding, msg: &[u8]) -> Result<Vec<u8>> {
    let (n, e, d) = (member(k, "n")?, member(k, "e")?, member(k, "d")?);
    let (p, q) = (member(k, "p")?, member(k, "q")?);
    let (dp, dq, qi) = (member(k, "dp")?, member(k, "dq")?, member(k, "qi")?);
    let components = ring::rsa::KeyPairComponents {
        public_key: ring::rsa::PublicKeyComponents { n: &n, e: &e },
        d: &d,
        p: &p,
        q: &q,
        dP: &dp,
        dQ: &dq,
        qInv: &qi,
    };
    let pair = RsaKeyPair::from_components(&components)
        .map_err(|e| bad(format!("signing JWK: RSA key refused: {e}")))?;
    let mut sig = vec![0; pair.public().modulus_len()];
    pair.sign(padding, &SystemRandom::new(), msg, &mut sig)
        .map_err(|_| bad("RSA signing failed"))?;
    Ok(sig)
}

fn ec_point(k: &Json, len: usize) -> Result<(Vec<u8>, Vec<u8>)> {
    let (x, y, d) = (member(k, "x")?, member(k, "y")?, member(k, "d")?);
    if x.len() != len || y.len() != len || d.len() != len {
        return Err(bad("signing JWK: EC member lengths do not match the curve"));
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(4);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok((d, point))
}

fn sign_ec(
    k: &Json,
    alg: &'static s::EcdsaSigningAlgorithm,
    len: usize,
    msg: &[u8],
) -> Result<Vec<u8>> {
    let rng = SystemRandom::new();
    let (d, point) = ec_point(k, len)?;
    let pair = EcdsaKeyPair::from_private_key_and_public_key(alg, &d, &point, &rng)
        .map_err(|e| bad(format!("signing JWK: EC key refused: {e}")))?;
    let sig = pair
        .sign(&rng, msg)
        .map_err(|_| bad("ECDSA signing failed"))?;
    Ok(sig.as_ref().to_vec())
}

fn sign_p521(k: &Json, msg: &[u8]) -> Result<Vec<u8>> {
    use p521::ecdsa::signature::Signer as _;
    let (d, point) = ec_point(k, 66)?;
    let key = p521::ecdsa::SigningKey::from_slice(&d)
        .map_err(|e| bad(format!("signing JWK: P-521 key refused: {e}")))?;
    if p521::ecdsa::VerifyingKey::from(&key)
        .to_encoded_point(false)
        .as_bytes()
        != point.as_slice()
    {
        return Err(bad("signing JWK: P-521 x/y do not match d"));
    }
    let sig: p521::ecdsa::Signature = key.sign(msg);
    Ok(sig.to_bytes().to_vec())
}

fn sign_ed25519(k: &Json, msg: &[u8]) -> Result<Vec<u8>> {
    if k.get("crv").and_then(Json::as_str) != Some("Ed25519") {
        return Err(bad("signing JWK: EdDSA needs an Ed25519 OKP key"));
    }
    let pair = Ed25519KeyPair::from_seed_and_public_key(&member(k, "d")?, &member(k, "x")?)
        .map_err(|e| bad(format!("signing JWK: Ed25519 key refused: {e}")))?;
    Ok(pair.sign(msg).as_ref().to_vec())
}

fn sign_hmac(k: &Json, alg: ring::hmac::Algorithm, msg: &[u8]) -> Result<Vec<u8>> {
    let secret = member(k, "k")?;
    // An empty secret is one anybody can sign with; esm refuses it on verification too.
    if secret.is_empty() {
        return Err(bad("signing JWK: oct key with an empty k"));
    }
    let key = ring::hmac::Key::new(alg, &secret);
    Ok(ring::hmac::sign(&key, msg).as_ref().to_vec())
}

/// The signature of `msg` by `key` (one JWK) with `alg`. A key of the wrong kind is an error.
pub fn sign(alg: &str, key: &Json, msg: &[u8]) -> Result<Vec<u8>> {
    let wrong = || {
        bad(format!(
            "signing JWK: a {:?} key cannot sign {alg}",
            kty(key)
        ))
    };
    let want = match alg {
        a if a.starts_with("RS") || a.starts_with("PS") => "RSA",
        a if a.starts_with("ES") => "EC",
        "EdDSA" => "OKP",
        a if a.starts_with("HS") => "oct",
        other => return Err(bad(format!("unsupported alg {other:?}"))),
    };
    if kty(key) != want {
        return Err(wrong());
    }
    let crv = key.get("crv").and_then(Json::as_str);
    match (alg, crv) {
        ("RS256", _) => sign_rsa(key, &s::RSA_PKCS1_SHA256, msg),
        ("RS384", _) => sign_rsa(key, &s::RSA_PKCS1_SHA384, msg),
        ("RS512", _) => sign_rsa(key, &s::RSA_PKCS1_SHA512, msg),
        ("PS256", _) => sign_rsa(key, &s::RSA_PSS_SHA256, msg),
        ("PS384", _) => sign_rsa(key, &s::RSA_PSS_SHA384, msg),
        ("PS512", _) => sign_rsa(key, &s::RSA_PSS_SHA512, msg),
        ("ES256", Some("P-256")) => sign_ec(key, &s::ECDSA_P256_SHA256_FIXED_SIGNING, 32, msg),
        ("ES384", Some("P-384")) => sign_ec(key, &s::ECDSA_P384_SHA384_FIXED_SIGNING, 48, msg),
        ("ES512", Some("P-521")) => sign_p521(key, msg),
        ("EdDSA", _) => sign_ed25519(key, msg),
        ("HS256", _) => sign_hmac(key, ring::hmac::HMAC_SHA256, msg),
        ("HS384", _) => sign_hmac(key, ring::hmac::HMAC_SHA384, msg),
        ("HS512", _) => sign_hmac(key, ring::hmac::HMAC_SHA512, msg),
        ("ES256" | "ES384" | "ES512", _) => Err(wrong()),
        (other, _) => Err(bad(format!("unsupported alg {other:?}"))),
    }
}

/// `io.jwt.encode_sign_raw(header, payload, jwk)`: all three are JSON text; the header and
/// payload are signed byte for byte as given.
pub fn encode_sign_raw(header: &str, payload: &str, jwk: &str) -> Result<String> {
    let parsed: Json = serde_json::from_str(header).map_err(|e| bad(format!("JWS header: {e}")))?;
    let alg = parsed
        .get("alg")
        .and_then(Json::as_str)
        .ok_or_else(|| bad("JWS header: missing or invalid alg"))?;
    let typ = parsed.get("typ").and_then(Json::as_str);
    if typ.is_none_or(|t| t == "JWT") && serde_json::from_str::<Json>(payload).is_err() {
        return Err(bad("typ is JWT but the payload is not JSON"));
    }
    let key = first_key(jwk)?;
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let sig = sign(alg, &key, signed.as_bytes())?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// `io.jwt.encode_sign(header, payload, jwk)`: the same with JSON values, serialized compactly.
pub fn encode_sign(header: &Json, payload: &Json, jwk: &Json) -> Result<String> {
    let text = |v: &Json| serde_json::to_string(v).map_err(|e| bad(format!("JSON: {e}")));
    encode_sign_raw(&text(header)?, &text(payload)?, &text(jwk)?)
}

#[cfg(test)]
#[path = "jwt_sign_tests.rs"]
pub(crate) mod tests;
