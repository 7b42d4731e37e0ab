//! JSON Web Tokens for policies: decoding, and signature verification against a PEM
//! certificate, a PEM public key, a JWKS document or an HMAC secret. regorus has no
//! `io.jwt.*` builtins, and OPA-Envoy policies commonly check bearer tokens (Entra ID and
//! other OIDC issuers publish JWKS), so esm supplies them ([`crate::jwt_builtins`]). Also used
//! to verify signed OPA bundles ([`crate::bundle`]).
//!
//! Everything here is pure: a token and a key in, a verdict out.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value as Json;

use crate::error::{Error, Result};
pub use crate::jwt_keys::{parse_keys, Key, NamedKey};

/// A token longer than this is not decoded: real ones are a few KiB.
pub const MAX_TOKEN_LEN: usize = 64 << 10;
/// A key document (PEM or JWKS) longer than this is refused.
pub const MAX_KEY_LEN: usize = 1 << 20;

/// A decoded, not yet verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Token<'a> {
    pub header: Json,
    pub payload: Json,
    pub signature: Vec<u8>,
    /// `header.payload` as sent: the bytes the signature covers.
    pub signed: &'a str,
}

impl Token<'_> {
    pub fn alg(&self) -> &str {
        self.header.get("alg").and_then(Json::as_str).unwrap_or("")
    }

    pub fn kid(&self) -> Option<&str> {
        self.header.get("kid").and_then(Json::as_str)
    }
}

pub(crate) fn bad(reason: impl std::fmt::Display) -> Error {
    Error::Jwt(reason.to_string())
}

pub(crate) fn b64(part: &str, what: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| bad(format!("{what}: {e}")))
}

pub(crate) fn json_object(bytes: &[u8], what: &str) -> Result<Json> {
    let v: Json = serde_json::from_slice(bytes).map_err(|e| bad(format!("{what}: {e}")))?;
    if !v.is_object() {
        return Err(bad(format!("{what}: not a JSON object")));
    }
    Ok(v)
}

/// How many tokens deep a nested token (`cty: JWT`) may go: real ones nest once.
pub const MAX_NESTING: usize = 4;

/// A compact JWS split into its parts, header decoded, payload still raw: a nested token's
/// payload is itself a token, not a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Jws<'a> {
    pub header: Json,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    /// `header.payload` as sent: the bytes the signature covers.
    pub signed: &'a str,
}

impl<'a> Jws<'a> {
    /// The token as [`verify_with`] reads it (header, signature, signed bytes).
    pub fn as_token(&self) -> Token<'a> {
        Token {
            header: self.header.clone(),
            payload: Json::Null,
            signature: self.signature.clone(),
            signed: self.signed,
        }
    }

    /// Whether the payload is itself a token (RFC 7519 §5.2; OPA compares without case).
    pub fn nests(&self) -> bool {
        self.header
            .get("cty")
            .and_then(Json::as_str)
            .is_some_and(|c| c.eq_ignore_ascii_case("JWT"))
    }

    /// The payload as the next token to decode, without the quotes some signers add.
    pub fn inner_token(&self) -> Result<String> {
        let text = std::str::from_utf8(&self.payload).map_err(|e| bad(format!("payload: {e}")))?;
        Ok(text.trim_matches(|c| c == '"' || c == '\'').to_owned())
    }
}

/// Splits a compact JWS and decodes its header. As OPA: anything but three parts is an error
/// (so a five-part JWE is refused), and so is a header naming an encryption (`enc`).
pub fn split(token: &str) -> Result<Jws<'_>> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(bad(format!("token longer than {MAX_TOKEN_LEN} bytes")));
    }
    let parts: Vec<&str> = token.splitn(6, '.').collect();
    let [h, p, s] = parts[..] else {
        return Err(bad(format!(
            "a compact JWS has 3 dot-separated parts, this token has {}",
            token.split('.').count()
        )));
    };
    let header = json_object(&b64(h, "header")?, "header")?;
    if header.get("enc").is_some() {
        return Err(bad(
            "the token is a JWE (its header has enc): not supported",
        ));
    }
    Ok(Jws {
        header,
        payload: b64(p, "payload")?,
        signature: b64(s, "signature")?,
        signed: &token[..h.len() + 1 + p.len()],
    })
}

/// Splits and decodes a compact JWS whose payload is a JSON object.
pub fn decode(token: &str) -> Result<Token<'_>> {
    let jws = split(token)?;
    Ok(Token {
        payload: json_object(&jws.payload, "payload")?,
        header: jws.header,
        signature: jws.signature,
        signed: jws.signed,
    })
}

/// `io.jwt.decode`: follows nested tokens (`cty: JWT`) down to the innermost one, as OPA
/// does, without verifying anything.
pub fn decode_innermost(token: &str) -> Result<Token<'static>> {
    let mut text = token.to_owned();
    for _ in 0..=MAX_NESTING {
        let jws = split(&text)?;
        if jws.nests() {
            text = jws.inner_token()?;
            continue;
        }
        return Ok(Token {
            payload: json_object(&jws.payload, "payload")?,
            header: jws.header,
            signature: jws.signature,
            signed: "",
        });
    }
    Err(bad(format!("tokens nested more than {MAX_NESTING} deep")))
}

/// Header parameters RFC 7515 §4.1 defines; `crit` must not name them (§4.1.11).
const STANDARD_HEADER: [&str; 11] = [
    "alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit",
];

/// RFC 7515 §4.1.11: a recipient must reject a token whose `crit` names an extension it does
/// not understand, since the signer declared the token's meaning depends on it. esm
/// understands no extension, so any `crit` is refused; the reason says which rule it broke
/// (not an array, empty, a standard parameter, absent from the header, or unknown).
pub fn check_crit(header: &Json) -> Result<()> {
    let Some(crit) = header.get("crit") else {
        return Ok(());
    };
    let Json::Array(names) = crit else {
        return Err(bad("crit is not an array"));
    };
    if names.is_empty() {
        return Err(bad("crit is an empty array"));
    }
    for name in names {
        let name = name
            .as_str()
            .ok_or_else(|| bad("crit names something that is not a string"))?;
        if STANDARD_HEADER.contains(&name) {
            return Err(bad(format!("crit names the standard parameter {name:?}")));
        }
        if header.get(name).is_none() {
            return Err(bad(format!("crit names {name:?}, absent from the header")));
        }
    }
    // Well-formed, but every name is an extension, and esm implements none.
    Err(bad(format!(
        "crit names extensions esm does not understand: {crit}"
    )))
}

/// True when `key` made `token`'s signature with `alg`. A key of the wrong kind for `alg`
/// does not verify, nor does an empty HMAC secret or a token with a `crit` header
/// ([`check_crit`]); an algorithm esm does not know (or `none`) is an error.
pub fn verify_with(token: &Token<'_>, alg: &str, key: &Key) -> Result<bool> {
    use signature as s;
    if check_crit(&token.header).is_err() {
        return Ok(false);
    }
    let msg = token.signed.as_bytes();
    let sig = &token.signature;
    let rsa: Option<&'static s::RsaParameters> = match alg {
        "RS256" => Some(&s::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => Some(&s::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => Some(&s::RSA_PKCS1_2048_8192_SHA512),
        "PS256" => Some(&s::RSA_PSS_2048_8192_SHA256),
        "PS384" => Some(&s::RSA_PSS_2048_8192_SHA384),
        "PS512" => Some(&s::RSA_PSS_2048_8192_SHA512),
        _ => None,
    };
    if let Some(params) = rsa {
        let Key::Rsa { n, e } = key else {
            return Ok(false);
        };
        return Ok(RsaPublicKeyComponents { n, e }
            .verify(params, msg, sig)
            .is_ok());
    }
    let ec: Option<(&'static s::EcdsaVerificationAlgorithm, usize)> = match alg {
        "ES256" => Some((&s::ECDSA_P256_SHA256_FIXED, 65)),
        "ES384" => Some((&s::ECDSA_P384_SHA384_FIXED, 97)),
        _ => None,
    };
    if let Some((algorithm, len)) = ec {
        let Key::Ec(point) = key else {
            return Ok(false);
        };
        return Ok(point.len() == len
            && UnparsedPublicKey::new(algorithm, point)
                .verify(msg, sig)
                .is_ok());
    }
    match (alg, key) {
        ("ES512", Key::Ec(point)) => return Ok(verify_p521(point, msg, sig)),
        ("EdDSA", Key::Ed25519(public)) => {
            return Ok(UnparsedPublicKey::new(&s::ED25519, public)
                .verify(msg, sig)
                .is_ok())
        }
        ("ES512" | "EdDSA", _) => return Ok(false),
        _ => {}
    }
    let hmac = match alg {
        "HS256" => ring::hmac::HMAC_SHA256,
        "HS384" => ring::hmac::HMAC_SHA384,
        "HS512" => ring::hmac::HMAC_SHA512,
        other => return Err(bad(format!("unsupported alg {other:?}"))),
    };
    let Key::Hmac(secret) = key else {
        return Ok(false);
    };
    if secret.is_empty() {
        return Ok(false);
    }
    Ok(ring::hmac::verify(&ring::hmac::Key::new(hmac, secret), msg, sig).is_ok())
}

/// ES512 (ring has no P-521): the RustCrypto implementation, fixed-size `r || s` signature.
fn verify_p521(point: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    use p521::ecdsa::signature::Verifier as _;
    let (Ok(key), Ok(sig)) = (
        p521::ecdsa::VerifyingKey::from_sec1_bytes(point),
        p521::ecdsa::Signature::from_slice(sig),
    ) else {
        return false;
    };
    key.verify(msg, &sig).is_ok()
}

/// True when any of `keys` (those whose `kid` and `alg` do not rule them out) verifies.
pub fn verify_any(token: &Token<'_>, alg: &str, keys: &[NamedKey]) -> Result<bool> {
    for k in keys {
        let kid_ok = match (token.kid(), &k.kid) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        };
        let alg_ok = k.alg.as_deref().is_none_or(|a| a == alg);
        if kid_ok && alg_ok && verify_with(token, alg, &k.key)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The registered claims `io.jwt.decode_verify` checks besides the signature.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims {
    pub iss: Option<String>,
    pub aud: Option<String>,
    /// Nanoseconds since the Unix epoch, as OPA's `time` constraint.
    pub now_ns: i128,
}

/// `exp`, `nbf`, `iss` and `aud` the way OPA checks them: a token with an audience is only
/// valid when the caller names one of its audiences.
pub fn claims_hold(payload: &Json, c: &Claims) -> bool {
    let secs = |f: &str| payload.get(f).and_then(Json::as_f64);
    let now = c.now_ns as f64 / 1e9;
    if secs("exp").is_some_and(|exp| now >= exp) || secs("nbf").is_some_and(|nbf| now < nbf) {
        return false;
    }
    if payload.get("exp").is_some_and(|v| !v.is_number())
        || payload.get("nbf").is_some_and(|v| !v.is_number())
    {
        return false;
    }
    if let Some(iss) = &c.iss {
        if payload.get("iss").and_then(Json::as_str) != Some(iss.as_str()) {
            return false;
        }
    }
    match (payload.get("aud"), &c.aud) {
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(Json::String(a)), Some(want)) => a == want,
        (Some(Json::Array(a)), Some(want)) => a.iter().any(|x| x.as_str() == Some(want)),
        (Some(_), Some(_)) => false,
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
pub(crate) mod tests;
