//! Keys a JSON Web Token is verified with: the forms OPA's `io.jwt.verify_*` accept as their
//! key argument (PEM certificate or public key, JWKS, single JWK), parsed into [`Key`]s.

use serde_json::Value as Json;

use crate::error::Result;
use crate::jwt::{b64, bad, MAX_KEY_LEN};

/// A key a token can be verified with.
#[derive(Clone, PartialEq, Eq)]
pub enum Key {
    /// RSA as modulus and exponent (big-endian), from a JWK or a PEM.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An uncompressed EC point; its length says the curve (65: P-256, 97: P-384, 133: P-521).
    Ec(Vec<u8>),
    /// An Ed25519 public key (32 bytes).
    Ed25519(Vec<u8>),
    /// An HMAC secret.
    Hmac(Vec<u8>),
}

/// Key material is never printed, only its kind.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Rsa { .. } => "Key::Rsa",
            Self::Ec(_) => "Key::Ec",
            Self::Ed25519(_) => "Key::Ed25519",
            Self::Hmac(_) => "Key::Hmac",
        })
    }
}

/// A key with the optional `kid` / `alg` its JWK named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedKey {
    pub kid: Option<String>,
    pub alg: Option<String>,
    pub key: Key,
}

impl Key {
    /// Whether this kind of key can verify `alg` (an HMAC secret never verifies RS256, a
    /// public key is never an HMAC secret).
    pub fn suits(&self, alg: &str) -> bool {
        match self {
            Self::Rsa { .. } => alg.starts_with("RS") || alg.starts_with("PS"),
            Self::Ec(point) => matches!(
                (alg, point.len()),
                ("ES256", 65) | ("ES384", 97) | ("ES512", 133)
            ),
            Self::Ed25519(_) => alg == "EdDSA",
            Self::Hmac(_) => alg.starts_with("HS"),
        }
    }
}

/// Reads a PEM certificate, a PEM public key (SPKI or PKCS#1 RSA), a JWKS (`{"keys": […]}`)
/// or a single JWK: every form OPA's `io.jwt.verify_*` accept as their second argument.
pub fn parse_keys(text: &str) -> Result<Vec<NamedKey>> {
    if text.len() > MAX_KEY_LEN {
        return Err(bad(format!("key longer than {MAX_KEY_LEN} bytes")));
    }
    let t = text.trim_start();
    if t.starts_with('{') {
        let v: Json = serde_json::from_str(t).map_err(|e| bad(format!("JWKS: {e}")))?;
        return match v.get("keys") {
            Some(Json::Array(keys)) => keys.iter().map(jwk).collect(),
            Some(_) => Err(bad("JWKS: keys is not an array")),
            None => Ok(vec![jwk(&v)?]),
        };
    }
    crate::jwt_pem::parse(t)
}

fn jwk_b64(k: &Json, field: &str) -> Result<Vec<u8>> {
    let s = k
        .get(field)
        .and_then(Json::as_str)
        .ok_or_else(|| bad(format!("JWK: no {field}")))?;
    b64(s, &format!("JWK {field}"))
}

fn jwk(k: &Json) -> Result<NamedKey> {
    let text = |f: &str| k.get(f).and_then(Json::as_str).map(str::to_owned);
    let key = match text("kty").as_deref() {
        Some("RSA") => Key::Rsa {
            n: jwk_b64(k, "n")?,
            e: jwk_b64(k, "e")?,
        },
        Some("EC") => {
            let (x, y) = (jwk_b64(k, "x")?, jwk_b64(k, "y")?);
            let len = match text("crv").as_deref() {
                Some("P-256") => 32,
                Some("P-384") => 48,
                Some("P-521") => 66,
                other => return Err(bad(format!("JWK: unsupported curve {other:?}"))),
            };
            if x.len() != len || y.len() != len {
                return Err(bad("JWK: coordinate length does not match the curve"));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Key::Ec(point)
        }
        Some("OKP") => match text("crv").as_deref() {
            Some("Ed25519") => {
                let x = jwk_b64(k, "x")?;
                if x.len() != 32 {
                    return Err(bad("JWK: an Ed25519 x is 32 bytes"));
                }
                Key::Ed25519(x)
            }
            other => return Err(bad(format!("JWK: unsupported OKP curve {other:?}"))),
        },
        Some("oct") => {
            let secret = jwk_b64(k, "k")?;
            // An empty secret is one anybody can sign with.
            if secret.is_empty() {
                return Err(bad("JWK: oct key with an empty k"));
            }
            Key::Hmac(secret)
        }
        other => return Err(bad(format!("JWK: unsupported kty {other:?}"))),
    };
    Ok(NamedKey {
        kid: text("kid"),
        alg: text("alg"),
        key,
    })
}
