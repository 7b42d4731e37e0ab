#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

use crate::jwt::tests::{hs256, EcSigner};
use crate::policy_set::{PolicySet, SourceFile};

use super::JwtKeys;

const POLICY: &str = r#"
package envoy.authz

import rego.v1

default allow := false

token := t if {
	[_, t] := split(input.attributes.request.http.headers.authorization, " ")
}

claims := c if {
	[valid, _, c] := io.jwt.decode_verify(token, object.union(data.jwt, {"time": input.now}))
	valid
}

allow if claims.role == "admin"

payload := p if [_, p, _] := io.jwt.decode(token)

hs_ok := io.jwt.verify_hs256(token, "s3cret")

es_ok := io.jwt.verify_es256(token, data.pem)

hs_configured := io.jwt.verify_hs256(token, "")

decoded := io.jwt.decode_verify(token, object.union(data.jwt, {"time": input.now}))
"#;

fn set(data: serde_json::Value, keys: &JwtKeys) -> PolicySet {
    let files = vec![
        SourceFile {
            path: "p.rego".into(),
            text: POLICY.into(),
        },
        SourceFile {
            path: "data.json".into(),
            text: data.to_string(),
        },
    ];
    PolicySet::compile_with(files, "data.envoy.authz.allow", keys).unwrap()
}

fn input(token: &str, now_s: i64) -> regorus::Value {
    regorus::Value::from(json!({
        "now": now_s as i128 * 1_000_000_000,
        "attributes": {"request": {"http": {"headers": {"authorization": format!("Bearer {token}")}}}}
    }))
}

const NOW: i64 = 1_800_000_000;

#[test]
fn decode_verify_with_a_configured_jwks_admits_a_valid_token() {
    let s = EcSigner::new();
    let keys = JwtKeys::from_text(&s.jwks("k1")).unwrap();
    let set = set(
        json!({"jwt": {"iss": "https://login.test", "aud": "api"}, "pem": ""}),
        &keys,
    );
    let good = s.sign(
        json!({"alg": "ES256", "kid": "k1"}),
        json!({"iss": "https://login.test", "aud": "api", "exp": NOW + 60, "role": "admin"}),
    );
    assert_eq!(
        set.eval(input(&good, NOW)).unwrap(),
        regorus::Value::Bool(true)
    );
    // Expired, wrong audience, wrong role, or signed by another key: denied.
    let expired = s.sign(
        json!({"alg": "ES256"}),
        json!({"iss": "https://login.test", "aud": "api", "exp": NOW - 1, "role": "admin"}),
    );
    let other_aud = s.sign(
        json!({"alg": "ES256"}),
        json!({"iss": "https://login.test", "aud": "web", "exp": NOW + 60, "role": "admin"}),
    );
    let forged = EcSigner::new().sign(
        json!({"alg": "ES256"}),
        json!({"iss": "https://login.test", "aud": "api", "exp": NOW + 60, "role": "admin"}),
    );
    for t in [expired, other_aud, forged] {
        assert_eq!(
            set.eval(input(&t, NOW)).unwrap(),
            regorus::Value::Bool(false)
        );
    }
}

#[test]
fn verify_builtins_take_a_pem_or_a_secret() {
    let s = EcSigner::new();
    let set = set(json!({"jwt": {}, "pem": s.cert_pem}), &JwtKeys::default());
    let es = s.sign(json!({"alg": "ES256"}), json!({"sub": "a"}));
    let hs = hs256(b"s3cret", json!({"sub": "b"}));
    let rule = |r: &str, t: &str| set.eval_rule(r, input(t, NOW)).unwrap();
    assert_eq!(
        rule("data.envoy.authz.es_ok", &es),
        regorus::Value::Bool(true)
    );
    assert_eq!(
        rule("data.envoy.authz.es_ok", &hs),
        regorus::Value::Bool(false)
    );
    assert_eq!(
        rule("data.envoy.authz.hs_ok", &hs),
        regorus::Value::Bool(true)
    );
    assert_eq!(
        rule("data.envoy.authz.hs_ok", &es),
        regorus::Value::Bool(false)
    );
    assert_eq!(
        rule("data.envoy.authz.payload", &hs),
        regorus::Value::from(json!({"sub": "b"}))
    );
}

#[test]
fn a_garbage_token_makes_decode_verify_and_decode_verify_undefined() {
    let set = set(
        json!({"jwt": {"secret": "x"}, "pem": ""}),
        &JwtKeys::default(),
    );
    // As in OPA: a token that cannot be decoded is a builtin error, not `false`; under OPA's
    // default (non-strict) evaluation the call is undefined, so is every rule built on it.
    for rule in [
        "data.envoy.authz.payload",
        "data.envoy.authz.hs_ok",
        "data.envoy.authz.decoded",
    ] {
        for token in ["x.y.z", "a.b", "nodots", "a.b.c.d.e"] {
            assert_eq!(
                set.eval_rule(rule, input(token, NOW)).unwrap(),
                regorus::Value::Undefined,
                "{rule} on {token}"
            );
        }
    }
    // The decision falls to the policy's default.
    assert_eq!(
        set.eval(input("a.b", NOW)).unwrap(),
        regorus::Value::Bool(false)
    );
}

#[test]
fn an_empty_key_without_a_configured_jwks_is_an_error() {
    let s = EcSigner::new();
    let set = set(json!({"jwt": {}, "pem": ""}), &JwtKeys::default());
    let es = s.sign(json!({"alg": "ES256"}), json!({}));
    assert!(set
        .eval_rule("data.envoy.authz.es_ok", input(&es, NOW))
        .is_err());
}

/// A JWKS holding one HMAC (`oct`) key.
fn oct_jwks(secret: &[u8]) -> String {
    use base64::Engine as _;
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    json!({"keys": [{"kty": "oct", "kid": "h1", "k": k}]}).to_string()
}

#[test]
fn a_token_forged_with_the_empty_hmac_key_is_never_verified() {
    // The attack: sign an admin token with HMAC key "" and send it to a policy that passes
    // "" (meaning "the configured JWKS") to verify_hs256 or as decode_verify's secret.
    let forged = hs256(b"", json!({"role": "admin", "exp": NOW + 60}));
    let ec = EcSigner::new();
    for keys in [
        JwtKeys::default(),
        JwtKeys::from_text(&ec.jwks("k1")).unwrap(),
        JwtKeys::from_text(&oct_jwks(b"the real secret")).unwrap(),
    ] {
        let policy = set(json!({"jwt": {"secret": ""}, "pem": ""}), &keys);
        let hs = policy.eval_rule("data.envoy.authz.hs_configured", input(&forged, NOW));
        assert!(
            matches!(hs, Err(_) | Ok(regorus::Value::Bool(false))),
            "{hs:?}"
        );
        let allowed = policy.eval(input(&forged, NOW));
        assert!(
            matches!(allowed, Err(_) | Ok(regorus::Value::Bool(false))),
            "{allowed:?}"
        );
        // No constraint key at all means the JWKS too, never an empty secret.
        let policy = set(json!({"jwt": {}, "pem": ""}), &keys);
        let allowed = policy.eval(input(&forged, NOW));
        assert!(
            matches!(allowed, Err(_) | Ok(regorus::Value::Bool(false))),
            "{allowed:?}"
        );
    }
}

#[test]
fn an_empty_key_verifies_hmac_tokens_with_the_jwks_oct_key() {
    let keys = JwtKeys::from_text(&oct_jwks(b"jwks secret")).unwrap();
    let good = hs256(b"jwks secret", json!({"role": "admin", "exp": NOW + 60}));
    let t = regorus::Value::Bool(true);
    for jwt in [json!({"secret": ""}), json!({})] {
        let policy = set(json!({"jwt": jwt, "pem": ""}), &keys);
        assert_eq!(policy.eval(input(&good, NOW)).unwrap(), t);
        assert_eq!(
            policy
                .eval_rule("data.envoy.authz.hs_configured", input(&good, NOW))
                .unwrap(),
            t
        );
    }
    // `cert` admits only asymmetric algorithms, also when its key comes from the JWKS.
    let policy = set(json!({"jwt": {"cert": ""}, "pem": ""}), &keys);
    assert_eq!(
        policy.eval(input(&good, NOW)).unwrap(),
        regorus::Value::Bool(false)
    );
    // verify_es256 with "" and a JWKS without an EC key: a configuration error.
    let es = EcSigner::new().sign(json!({"alg": "ES256"}), json!({}));
    assert!(policy
        .eval_rule("data.envoy.authz.es_ok", input(&es, NOW))
        .is_err());
}

#[test]
fn a_token_with_an_unknown_critical_extension_does_not_verify() {
    let s = EcSigner::new();
    let keys = JwtKeys::from_text(&s.jwks("k1")).unwrap();
    let policy = set(json!({"jwt": {}, "pem": s.cert_pem}), &keys);
    let payload = json!({"role": "admin", "exp": NOW + 60});
    let plain = s.sign(json!({"alg": "ES256"}), payload.clone());
    assert_eq!(
        policy.eval(input(&plain, NOW)).unwrap(),
        regorus::Value::Bool(true)
    );
    // Correctly signed, but the signer says the token means something only an
    // implementation of "x-unknown" understands.
    let crit = s.sign(
        json!({"alg": "ES256", "crit": ["x-unknown"], "x-unknown": true}),
        payload,
    );
    let invalid = regorus::Value::from(json!([false, {}, {}]));
    assert_eq!(
        policy
            .eval_rule("data.envoy.authz.decoded", input(&crit, NOW))
            .unwrap(),
        invalid
    );
    assert_eq!(
        policy.eval(input(&crit, NOW)).unwrap(),
        regorus::Value::Bool(false)
    );
    assert_eq!(
        policy
            .eval_rule("data.envoy.authz.es_ok", input(&crit, NOW))
            .unwrap(),
        regorus::Value::Bool(false)
    );
}
