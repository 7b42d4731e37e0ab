#![allow(clippy::unwrap_used, clippy::expect_used)]

use ring::signature::KeyPair as _;
use serde_json::json;

use super::*;
use crate::jwt::{decode, parse_keys, verify_any};

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// A P-256 private JWK from a fresh ring key (its PKCS#8 holds `d`, then the public point).
pub(crate) fn p256_jwk() -> Json {
    let rng = SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&s::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let der = doc.as_ref();
    let pair = EcdsaKeyPair::from_pkcs8(&s::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng).unwrap();
    let point = pair.public_key().as_ref().to_vec();
    let d = (0..der.len() - 32)
        .map(|i| &der[i..i + 32])
        .find(|d| {
            EcdsaKeyPair::from_private_key_and_public_key(
                &s::ECDSA_P256_SHA256_FIXED_SIGNING,
                d,
                &point,
                &rng,
            )
            .is_ok()
        })
        .unwrap();
    json!({"kty": "EC", "crv": "P-256", "d": b64(d), "x": b64(&point[1..33]), "y": b64(&point[33..])})
}

pub(crate) fn p521_jwk() -> Json {
    let mut d = [0x5a_u8; 66];
    d[0] = 0x01;
    let key = p521::ecdsa::SigningKey::from_slice(&d).unwrap();
    let point = p521::ecdsa::VerifyingKey::from(&key).to_encoded_point(false);
    let p = point.as_bytes();
    json!({"kty": "EC", "crv": "P-521", "d": b64(&d), "x": b64(&p[1..67]), "y": b64(&p[67..])})
}

pub(crate) fn ed25519_jwk() -> Json {
    let seed = [7_u8; 32];
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    json!({"kty": "OKP", "crv": "Ed25519", "d": b64(&seed), "x": b64(pair.public_key().as_ref())})
}

fn rsa_jwk() -> Json {
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let mut key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    key.precompute().unwrap();
    let be = |n: &rsa::BigUint| b64(&n.to_bytes_be());
    let qinv = key.crt_coefficient().unwrap();
    json!({"kty": "RSA", "n": be(key.n()), "e": be(key.e()), "d": be(key.d()),
        "p": be(&key.primes()[0]), "q": be(&key.primes()[1]),
        "dp": be(key.dp().unwrap()), "dq": be(key.dq().unwrap()), "qi": be(&qinv)})
}

/// The public half of a private JWK, as a verifier would publish it.
pub(crate) fn public(jwk: &Json) -> String {
    let mut k = jwk.clone();
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        k.as_object_mut().unwrap().remove(private);
    }
    k.to_string()
}

fn round_trip(alg: &str, jwk: &Json) {
    let token = encode_sign(
        &json!({"alg": alg, "typ": "JWT"}),
        &json!({"sub": "svc"}),
        jwk,
    )
    .unwrap();
    let t = decode(&token).unwrap();
    assert_eq!(t.payload["sub"], "svc");
    let keys = parse_keys(&public(jwk)).unwrap();
    assert!(verify_any(&t, alg, &keys).unwrap(), "{alg} does not verify");
    // One flipped payload byte and it no longer verifies.
    let tampered = token.replacen(".ey", ".eY", 1);
    let t = decode(&tampered).map(|t| verify_any(&t, alg, &keys).unwrap());
    assert!(!t.unwrap_or(false), "{alg} verified a tampered token");
}

#[test]
fn signs_with_every_key_kind_and_the_signature_verifies() {
    let rsa = rsa_jwk();
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        round_trip(alg, &rsa);
    }
    round_trip("ES256", &p256_jwk());
    round_trip("ES512", &p521_jwk());
    round_trip("EdDSA", &ed25519_jwk());
    let oct = json!({"kty": "oct", "k": b64(b"a shared secret")});
    let token = encode_sign(&json!({"alg": "HS256"}), &json!({"a": 1}), &oct).unwrap();
    let keys = vec![crate::jwt::NamedKey {
        kid: None,
        alg: None,
        key: crate::jwt::Key::Hmac(b"a shared secret".to_vec()),
    }];
    assert!(verify_any(&decode(&token).unwrap(), "HS256", &keys).unwrap());
}

#[test]
fn raw_form_signs_the_header_and_payload_bytes_as_given() {
    let oct = json!({"keys": [{"kty": "oct", "k": b64(b"k1")}, {"kty": "oct", "k": b64(b"k2")}]});
    let header = r#"{"typ":"JWT",
 "alg":"HS256"}"#;
    let token = encode_sign_raw(header, r#"{"iss":"joe"}"#, &oct.to_string()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(URL_SAFE_NO_PAD.decode(parts[0]).unwrap(), header.as_bytes());
    // The first key of a JWKS signs.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k1");
    let msg = format!("{}.{}", parts[0], parts[1]);
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    assert!(ring::hmac::verify(&key, msg.as_bytes(), &sig).is_ok());
}

#[test]
fn a_payload_that_is_not_json_needs_a_typ_other_than_jwt() {
    let oct = json!({"kty": "oct", "k": b64(b"k")}).to_string();
    assert!(encode_sign_raw(r#"{"alg":"HS256"}"#, "plain text", &oct).is_err());
    assert!(encode_sign_raw(r#"{"alg":"HS256","typ":"JWT"}"#, "plain text", &oct).is_err());
    assert!(encode_sign_raw(r#"{"alg":"HS256","typ":"text"}"#, "plain text", &oct).is_ok());
}

#[test]
fn refuses_mismatched_empty_or_malformed_keys_and_unknown_algorithms() {
    let oct = json!({"kty": "oct", "k": b64(b"k")});
    let payload = json!({});
    let sign = |alg: &str, key: &Json| encode_sign(&json!({"alg": alg}), &payload, key);
    assert!(sign("RS256", &oct).is_err());
    assert!(sign("ES256", &p521_jwk()).is_err());
    assert!(sign("ES512", &p256_jwk()).is_err());
    assert!(sign("EdDSA", &oct).is_err());
    assert!(sign("none", &oct).is_err());
    assert!(sign("HS256", &json!({"kty": "oct", "k": ""})).is_err());
    assert!(sign("HS256", &json!({"keys": []})).is_err());
    assert!(sign("HS256", &json!("a string")).is_err());
    assert!(encode_sign(&json!({}), &payload, &oct).is_err());
    // A P-521 key whose public half is not its private key's.
    let mut p521 = p521_jwk();
    p521["x"] = json!(b64(&[1; 66]));
    assert!(sign("ES512", &p521).is_err());
    // RSA without its private members.
    let rsa: Json = serde_json::from_str(&public(&rsa_jwk())).unwrap();
    assert!(sign("RS256", &rsa).is_err());
    assert!(encode_sign_raw("{", "{}", &oct.to_string()).is_err());
    assert!(encode_sign_raw(r#"{"alg":"HS256"}"#, "{}", &"x".repeat(MAX_KEY_LEN + 1)).is_err());
}
