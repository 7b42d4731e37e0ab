//! The io.jwt behaviours where esm follows OPA exactly: nested tokens, JWE and malformed
//! tokens, ES512 and EdDSA, and signing from a policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use regorus::Value;
use serde_json::{json, Value as Json};

use crate::jwt_sign::encode_sign_raw;
use crate::jwt_sign::tests::{ed25519_jwk, p521_jwk, public};
use crate::policy_set::{PolicySet, SourceFile};

use super::JwtKeys;

const POLICY: &str = r#"
package t

import rego.v1

decoded := io.jwt.decode(input.token)

verified := io.jwt.decode_verify(input.token, {"cert": input.key, "time": 1})

es512 := io.jwt.verify_es512(input.token, input.key)

eddsa := io.jwt.verify_eddsa(input.token, input.key)

signed := io.jwt.encode_sign({"alg": "EdDSA", "typ": "JWT"}, {"sub": "svc"}, input.jwk)

signed_raw := io.jwt.encode_sign_raw(`{"alg":"EdDSA"}`, `{"sub":"raw"}`, json.marshal(input.jwk))

signed_ok := io.jwt.verify_eddsa(signed, input.key)

signed_raw_claims := io.jwt.decode_verify(signed_raw, {"cert": input.key, "time": 1})[2]
"#;

fn set() -> PolicySet {
    let files = vec![SourceFile {
        path: "t.rego".into(),
        text: POLICY.into(),
    }];
    PolicySet::compile_with(files, "data.t.decoded", &JwtKeys::default()).unwrap()
}

fn rule(set: &PolicySet, name: &str, input: Json) -> anyhow::Result<Value> {
    Ok(set.eval_rule(&format!("data.t.{name}"), Value::from(input))?)
}

fn sign(header: &str, payload: &str, jwk: &Json) -> String {
    encode_sign_raw(header, payload, &jwk.to_string()).unwrap()
}

/// A token whose payload is `inner`, quoted as a JSON string (as jwt.io and OPA write it).
fn wrap(inner: &str, jwk: &Json) -> String {
    sign(
        r#"{"alg":"EdDSA","cty":"JWT"}"#,
        &Json::from(inner).to_string(),
        jwk,
    )
}

#[test]
fn nested_tokens_are_decoded_and_verified_layer_by_layer() {
    let set = set();
    let jwk = ed25519_jwk();
    let key = public(&jwk);
    let inner = sign(r#"{"alg":"EdDSA"}"#, r#"{"sub":"inner"}"#, &jwk);
    let nested = wrap(&inner, &jwk);
    let input = |t: &str| json!({"token": t, "key": key});
    let decoded = rule(&set, "decoded", input(&nested)).unwrap();
    assert_eq!(decoded[1], Value::from(json!({"sub": "inner"})));
    let verified = rule(&set, "verified", input(&nested)).unwrap();
    assert_eq!(verified[0], Value::Bool(true));
    assert_eq!(verified[1], Value::from(json!({"alg": "EdDSA"})));
    assert_eq!(verified[2], Value::from(json!({"sub": "inner"})));
    // Either layer signed by another key: not verified.
    let outer_forged = sign(
        r#"{"alg":"EdDSA","cty":"JWT"}"#,
        &Json::from(inner.as_str()).to_string(),
        &ed25519_from_seed(9),
    );
    let inner_forged = wrap(
        &sign(
            r#"{"alg":"EdDSA"}"#,
            r#"{"sub":"x"}"#,
            &ed25519_from_seed(9),
        ),
        &jwk,
    );
    for t in [outer_forged, inner_forged] {
        let v = rule(&set, "verified", input(&t)).unwrap();
        assert_eq!(v[0], Value::Bool(false));
    }
    // Nesting without end is refused, not followed.
    let mut deep = inner.clone();
    for _ in 0..8 {
        deep = wrap(&deep, &jwk);
    }
    for name in ["verified", "decoded"] {
        assert_eq!(rule(&set, name, input(&deep)).unwrap(), Value::Undefined);
    }
}

fn ed25519_from_seed(byte: u8) -> Json {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use ring::signature::KeyPair as _;
    let seed = [byte; 32];
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    json!({"kty": "OKP", "crv": "Ed25519", "d": URL_SAFE_NO_PAD.encode(seed),
        "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())})
}

#[test]
fn a_jwe_or_a_token_without_three_parts_is_a_builtin_error_so_undefined() {
    let set = set();
    let jwk = ed25519_jwk();
    let key = public(&jwk);
    // Five parts (compact JWE), two parts, and a JWS-shaped token whose header names `enc`.
    let enc_header = sign(r#"{"alg":"EdDSA","enc":"A256GCM"}"#, "{}", &jwk);
    for token in [
        "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d".to_owned(),
        "eyJhbGciOiJFZERTQSJ9.e30".to_owned(),
        enc_header,
    ] {
        for name in ["decoded", "verified", "eddsa"] {
            assert_eq!(
                rule(&set, name, json!({"token": token, "key": key})).unwrap(),
                Value::Undefined,
                "{name} accepted {token}"
            );
        }
    }
}

#[test]
fn es512_and_eddsa_verify_with_a_jwk() {
    let set = set();
    let (p521, ed) = (p521_jwk(), ed25519_jwk());
    let es_token = sign(r#"{"alg":"ES512"}"#, r#"{"a":1}"#, &p521);
    let ed_token = sign(r#"{"alg":"EdDSA"}"#, r#"{"a":1}"#, &ed);
    let check = |name: &str, token: &str, key: &Json| {
        rule(&set, name, json!({"token": token, "key": public(key)})).unwrap()
    };
    assert_eq!(check("es512", &es_token, &p521), Value::Bool(true));
    assert_eq!(check("eddsa", &ed_token, &ed), Value::Bool(true));
    // The wrong algorithm or key kind is `false`, not an error.
    assert_eq!(check("es512", &ed_token, &ed), Value::Bool(false));
    assert_eq!(check("eddsa", &es_token, &p521), Value::Bool(false));
    assert_eq!(
        check("eddsa", &ed_token, &ed25519_from_seed(3)),
        Value::Bool(false)
    );
}

#[test]
fn a_policy_signs_a_token_that_verifies() {
    let set = set();
    let jwk = ed25519_jwk();
    let input = json!({"jwk": jwk, "key": public(&jwk), "token": "a.b.c"});
    assert_eq!(
        rule(&set, "signed_ok", input.clone()).unwrap(),
        Value::Bool(true)
    );
    assert_eq!(
        rule(&set, "signed_raw_claims", input).unwrap(),
        Value::from(json!({"sub": "raw"}))
    );
    // A key that cannot sign makes the call undefined, as under OPA's default evaluation.
    let no_key = json!({"jwk": {"kty": "oct"}, "key": "", "token": "a.b.c"});
    assert_eq!(rule(&set, "signed", no_key).unwrap(), Value::Undefined);
}

/// OPA's default (non-strict) evaluation: a builtin that fails is undefined, so a policy's
/// `not` and `default` decide. A malformed key the policy passes, a signing header that is
/// not JSON or names an unknown algorithm, and a typ-JWT payload that is not JSON.
#[test]
fn a_bad_key_or_a_failed_signing_is_undefined_not_an_evaluation_error() {
    let set = PolicySet::compile(
        vec![SourceFile {
            path: "t.rego".into(),
            text: r#"package t
import rego.v1
verified := io.jwt.verify_rs256(input.token, input.key)
decoded := io.jwt.decode_verify(input.token, {"cert": input.key})
raw := io.jwt.encode_sign_raw(input.header, input.payload, `{"kty":"oct","k":"a2V5"}`)
not_verified if not io.jwt.verify_rs256(input.token, input.key)
"#
            .into(),
        }],
        "data.t.verified",
    )
    .unwrap();
    let bad_cert = "-----BEGIN CERTIFICATE-----
AAAA
-----END CERTIFICATE-----
";
    let input = json!({"token": "eyJhbGciOiJSUzI1NiJ9.e30.AAAA", "key": bad_cert,
                       "header": r#"{"alg":"#, "payload": "{}"});
    assert_eq!(
        rule(&set, "verified", input.clone()).unwrap(),
        Value::Undefined
    );
    assert_eq!(
        rule(&set, "decoded", input.clone()).unwrap(),
        Value::Undefined
    );
    assert_eq!(
        rule(&set, "not_verified", input.clone()).unwrap(),
        Value::Bool(true)
    );
    for (header, payload) in [
        ("{\"alg\":", "{}"),
        (r#"{"alg":"dummy"}"#, "{}"),
        ("", "{}"),
        (r#"{"alg":"HS256","typ":"JWT"}"#, "not json"),
    ] {
        let input = json!({"header": header, "payload": payload});
        assert_eq!(
            rule(&set, "raw", input).unwrap(),
            Value::Undefined,
            "{header} {payload}"
        );
    }
}

#[test]
fn an_exp_or_nbf_that_is_not_a_number_is_a_builtin_error_so_undefined() {
    let oct = json!({"kty": "oct", "k": "NDI"});
    for payload in [r#"{"exp":null}"#, r#"{"nbf":"soon"}"#] {
        let token = sign(r#"{"alg":"HS256"}"#, payload, &oct);
        let v = super::decode_verify(&token, &json!({"secret": "42"}), &JwtKeys::default());
        assert_eq!(v.unwrap(), Value::Undefined, "{payload}");
    }
    let fine = sign(r#"{"alg":"HS256"}"#, r#"{"exp":4102444800}"#, &oct);
    let v = super::decode_verify(
        &fine,
        &json!({"secret": "42", "time": 1}),
        &JwtKeys::default(),
    );
    assert_eq!(v.unwrap()[0], Value::Bool(true));
}
