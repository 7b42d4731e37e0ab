//! OPA's `io.jwt.*` builtins for regorus, registered as engine extensions: `decode`,
//! `verify_{rs,ps}{256,384,512}`, `verify_es{256,384,512}`, `verify_eddsa`,
//! `verify_hs{256,384,512}`, `decode_verify`, `encode_sign` and `encode_sign_raw`. Semantics
//! follow OPA: a bad signature is `false`; a token that cannot be decoded (not three parts, a
//! JWE, bad base64 or JSON) is a builtin error, and as in OPA's default (non-strict)
//! evaluation the call is then undefined, so the rule or body using it does not hold: a
//! policy's `default` decides, as under OPA-Envoy. The error is logged at debug level. Nested tokens (`cty: JWT`)
//! are followed: `decode` returns the innermost one, `decode_verify` verifies every layer
//! with the same keys and constraints. Key texts are parsed once ([`crate::jwt_key_cache`]).
//!
//! esm's addition: a policy may pass an empty key (`""`, `{"cert": ""}`, `{"secret": ""}`,
//! or a `decode_verify` constraint object without `cert` and `secret`) to verify against the
//! JWKS configured for the policy set, because regorus' `http.send` cannot fetch one. That
//! holds for every algorithm: for `HS*` the secret then comes from a JWKS `oct` key. An empty
//! (or blank) string is never itself an HMAC secret: anybody can sign with it.

use std::sync::Arc;

use regorus::{Engine, Value};
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::jwt::{self, Claims, Key, NamedKey};
use crate::jwt_sign;

/// Keys the builtins fall back to (a JWKS file named in the configuration).
#[derive(Debug, Clone, Default)]
pub struct JwtKeys(pub Arc<Vec<NamedKey>>);

impl JwtKeys {
    pub fn from_text(text: &str) -> Result<Self> {
        Ok(Self(Arc::new(jwt::parse_keys(text)?)))
    }
}

const ASYMMETRIC: [&str; 10] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
];
const HMAC: [&str; 3] = ["HS256", "HS384", "HS512"];

// regorus' extension signature is `anyhow::Result`; these helpers keep the conversion here.
type ExtResult = anyhow::Result<Value>;

fn string_arg(v: &Value, what: &str) -> anyhow::Result<String> {
    v.as_string()
        .map(|s| s.to_string())
        .map_err(|_| anyhow::anyhow!("{what}: expected a string"))
}

fn json_to_value(j: Json) -> Value {
    Value::from(j)
}

/// Whether a key argument means "the configured JWKS" rather than key material.
fn wants_configured(key: &str) -> bool {
    key.trim().is_empty()
}

/// The configured keys that can verify `alg`. No JWKS configured is an error: the policy can
/// never verify anything, and saying so beats a silent `false`.
fn configured_for(alg: &str, configured: &JwtKeys) -> Result<Vec<NamedKey>> {
    if configured.0.is_empty() {
        return Err(Error::Jwt("no key given and no JWKS configured".into()));
    }
    Ok(configured
        .0
        .iter()
        .filter(|k| k.key.suits(alg))
        .cloned()
        .collect())
}

fn secret(text: String) -> Vec<NamedKey> {
    vec![NamedKey {
        kid: None,
        alg: None,
        key: Key::Hmac(text.into_bytes()),
    }]
}

/// A token that cannot be decoded, a key the policy passed that cannot be parsed, or a
/// token that cannot be signed: the call is undefined, as OPA's non-strict evaluation makes
/// a failing builtin (see the module comment), so `not io.jwt.verify_rs256(t, bad_key)`
/// holds as it does under OPA. esm's own configuration (no JWKS) stays an error.
fn undecodable(e: &Error) -> Value {
    tracing::debug!(jwt.error = %e, "io.jwt: the call failed and is undefined");
    Value::Undefined
}

fn decode_builtin(args: Vec<Value>) -> ExtResult {
    let token = string_arg(&args[0], "io.jwt.decode")?;
    let t = match jwt::decode_innermost(&token) {
        Ok(t) => t,
        Err(e) => return Ok(undecodable(&e)),
    };
    Ok(Value::from(vec![
        json_to_value(t.header),
        json_to_value(t.payload),
        Value::from(hex::encode(&t.signature)),
    ]))
}

/// `io.jwt.verify_<alg>(token, key)`. The algorithm is the policy's choice, so a configured
/// JWKS without a key for it is a configuration error, not a `false`.
fn verify_builtin(alg: &'static str, args: &[Value], configured: &JwtKeys) -> ExtResult {
    let token = string_arg(&args[0], "token")?;
    let key = string_arg(&args[1], "key")?;
    let keys = if wants_configured(&key) {
        let keys = configured_for(alg, configured)?;
        if keys.is_empty() {
            return Err(Error::Jwt(format!("the configured JWKS has no key for {alg}")).into());
        }
        keys
    } else if HMAC.contains(&alg) {
        secret(key)
    } else {
        match crate::jwt_key_cache::cached_keys(&key) {
            Ok(k) => k.to_vec(),
            Err(e) => return Ok(undecodable(&e)),
        }
    };
    let t = match jwt::split(&token) {
        Ok(t) => t,
        Err(e) => return Ok(undecodable(&e)),
    };
    // Stricter than OPA, which lets a key without `alg` verify whatever the header says: the
    // header must name the algorithm the policy asked for.
    if t.header.get("alg").and_then(Json::as_str) != Some(alg) {
        return Ok(Value::Bool(false));
    }
    Ok(Value::Bool(jwt::verify_any(&t.as_token(), alg, &keys)?))
}

/// `cert` / `secret` of a constraints object: absent, or a string (anything else is an error).
fn key_constraint(constraints: &Json, field: &str) -> Result<Option<String>> {
    match constraints.get(field) {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::Jwt(format!("constraints: {field} is not a string"))),
    }
}

/// Verifies `token` and every token nested in it (`cty: JWT`), each with the same keys and
/// `alg` constraint, as OPA does. `None` when a layer does not verify; the innermost token
/// when all do; `Some(Err)` when a layer cannot be decoded. Key and constraint errors are
/// errors.
fn verify_layers(
    token: &str,
    constraints: &Json,
    (cert, secret_text): (Option<String>, Option<String>),
    configured: &JwtKeys,
) -> Result<Option<Result<jwt::Token<'static>>>> {
    let want_alg = constraints.get("alg").and_then(Json::as_str);
    let mut text = token.to_owned();
    for _ in 0..=jwt::MAX_NESTING {
        let t = match jwt::split(&text) {
            Ok(t) => t,
            Err(e) => return Ok(Some(Err(e))),
        };
        let Some(alg) = t
            .header
            .get("alg")
            .and_then(Json::as_str)
            .map(str::to_owned)
        else {
            return Ok(None);
        };
        if want_alg.is_some_and(|want| want != alg) {
            return Ok(None);
        }
        let (asymmetric, hmac) = (
            ASYMMETRIC.contains(&alg.as_str()),
            HMAC.contains(&alg.as_str()),
        );
        let admitted = match (&cert, &secret_text) {
            (Some(_), Some(_)) => {
                return Err(Error::Jwt("constraints: both cert and secret given".into()))
            }
            (Some(_), None) => asymmetric,
            (None, Some(_)) => hmac,
            (None, None) => asymmetric || hmac,
        };
        if !admitted {
            return Ok(None);
        }
        let keys = match cert
            .clone()
            .or(secret_text.clone())
            .filter(|k| !wants_configured(k))
        {
            Some(given) if hmac => secret(given),
            Some(given) => match crate::jwt_key_cache::cached_keys(&given) {
                Ok(k) => k.to_vec(),
                Err(e) => return Ok(Some(Err(e))),
            },
            None => configured_for(&alg, configured)?,
        };
        if keys.is_empty() || !jwt::verify_any(&t.as_token(), &alg, &keys)? {
            return Ok(None);
        }
        if t.nests() {
            text = match t.inner_token() {
                Ok(inner) => inner,
                Err(e) => return Ok(Some(Err(e))),
            };
            continue;
        }
        return Ok(Some(jwt::json_object(&t.payload, "payload").map(
            |payload| jwt::Token {
                payload,
                header: t.header,
                signature: t.signature,
                signed: "",
            },
        )));
    }
    Ok(Some(Err(Error::Jwt(format!(
        "tokens nested more than {} deep",
        jwt::MAX_NESTING
    )))))
}

/// `io.jwt.decode_verify(token, constraints)` → `[valid, header, payload]`. As in OPA, `cert`
/// admits only asymmetric algorithms and `secret` only HMAC ones, also when they are empty
/// and the key comes from the configured JWKS; with neither, any algorithm the JWKS has a key
/// for. The token picks its algorithm, so no configured key for it is `false`.
pub fn decode_verify(token: &str, constraints: &Json, configured: &JwtKeys) -> Result<Value> {
    let invalid = || {
        let empty = Value::new_object();
        Value::from(vec![Value::Bool(false), empty.clone(), empty])
    };
    let text = |f: &str| constraints.get(f).and_then(Json::as_str).map(str::to_owned);
    let (cert, secret_text) = (
        key_constraint(constraints, "cert")?,
        key_constraint(constraints, "secret")?,
    );
    let t = match verify_layers(token, constraints, (cert, secret_text), configured)? {
        None => return Ok(invalid()),
        Some(Err(e)) => return Ok(undecodable(&e)),
        Some(Ok(t)) => t,
    };
    let now_ns = match constraints.get("time") {
        Some(v) => v
            .as_f64()
            .map(|f| f as i128)
            .ok_or_else(|| Error::Jwt("constraints: time is not a number".into()))?,
        None => time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
    };
    let claims = Claims {
        iss: text("iss"),
        aud: text("aud"),
        now_ns,
    };
    // OPA: an `exp` or `nbf` that is not a number is a builtin error, not an invalid token.
    for claim in ["exp", "nbf"] {
        if t.payload.get(claim).is_some_and(|v| !v.is_number()) {
            return Ok(undecodable(&Error::Jwt(format!(
                "{claim} value must be a number"
            ))));
        }
    }
    if !jwt::claims_hold(&t.payload, &claims) {
        return Ok(invalid());
    }
    Ok(Value::from(vec![
        Value::Bool(true),
        json_to_value(t.header),
        json_to_value(t.payload),
    ]))
}

/// Adds every `io.jwt.*` builtin to `engine`.
pub fn register(engine: &mut Engine, keys: &JwtKeys) -> Result<()> {
    let add = |engine: &mut Engine, name: &str, nargs: u8, f: Box<dyn regorus::Extension>| {
        engine
            .add_extension(name.to_owned(), nargs, f)
            .map_err(|e| Error::Config(format!("{name}: {e}")))
    };
    add(engine, "io.jwt.decode", 1, Box::new(decode_builtin))?;
    for alg in ASYMMETRIC.into_iter().chain(HMAC) {
        let name = format!("io.jwt.verify_{}", alg.to_ascii_lowercase());
        let keys = keys.clone();
        add(
            engine,
            &name,
            2,
            Box::new(move |args: Vec<Value>| verify_builtin(alg, &args, &keys)),
        )?;
    }
    let keys = keys.clone();
    add(
        engine,
        "io.jwt.decode_verify",
        2,
        Box::new(move |args: Vec<Value>| -> ExtResult {
            let token = string_arg(&args[0], "token")?;
            let constraints: Json = serde_json::from_str(&args[1].to_json_str()?)?;
            Ok(decode_verify(&token, &constraints, &keys)?)
        }),
    )?;
    add(
        engine,
        "io.jwt.encode_sign",
        3,
        Box::new(|args: Vec<Value>| -> ExtResult {
            let json = |v: &Value| -> anyhow::Result<Json> {
                Ok(serde_json::from_str(&v.to_json_str()?)?)
            };
            match jwt_sign::encode_sign(&json(&args[0])?, &json(&args[1])?, &json(&args[2])?) {
                Ok(token) => Ok(Value::from(token)),
                Err(e) => Ok(undecodable(&e)),
            }
        }),
    )?;
    add(
        engine,
        "io.jwt.encode_sign_raw",
        3,
        Box::new(|args: Vec<Value>| -> ExtResult {
            let arg = |i: usize, what: &str| string_arg(&args[i], what);
            match jwt_sign::encode_sign_raw(
                &arg(0, "io.jwt.encode_sign_raw header")?,
                &arg(1, "io.jwt.encode_sign_raw payload")?,
                &arg(2, "io.jwt.encode_sign_raw key")?,
            ) {
                Ok(token) => Ok(Value::from(token)),
                Err(e) => Ok(undecodable(&e)),
            }
        }),
    )?;
    Ok(())
}

#[cfg(test)]
#[path = "jwt_builtins_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "jwt_conformance_tests.rs"]
mod conformance_tests;
