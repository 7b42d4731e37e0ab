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
fn a_garbage_token_is_an_error_for_decode_and_false_for_verify() {
    let set = set(
        json!({"jwt": {"secret": "x"}, "pem": ""}),
        &JwtKeys::default(),
    );
    assert!(set
        .eval_rule("data.envoy.authz.payload", input("x.y.z", NOW))
        .is_err());
    assert_eq!(
        set.eval_rule("data.envoy.authz.hs_ok", input("x.y.z", NOW))
            .unwrap(),
        regorus::Value::Bool(false)
    );
    // decode_verify of garbage is [false, {}, {}]: not allowed, not an error.
    assert_eq!(
        set.eval(input("x.y.z", NOW)).unwrap(),
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
