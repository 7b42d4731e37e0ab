#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

use super::*;

/// Test-only signers: an EC P-256 key (with its PEM certificate and JWK) and HMAC.
pub(crate) struct EcSigner {
    pair: EcdsaKeyPair,
    pub cert_pem: String,
}

impl EcSigner {
    pub(crate) fn new() -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["issuer.test".into()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &kp.serialize_der(),
            &SystemRandom::new(),
        )
        .unwrap();
        Self {
            pair,
            cert_pem: cert.pem(),
        }
    }

    pub(crate) fn jwks(&self, kid: &str) -> String {
        let p = self.pair.public_key().as_ref();
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..])}]})
        .to_string()
    }

    pub(crate) fn sign(&self, header: serde_json::Value, payload: serde_json::Value) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), signed.as_bytes())
            .unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

pub(crate) fn hs256(secret: &[u8], payload: serde_json::Value) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let sig = ring::hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fn rsa_token(payload: serde_json::Value) -> (String, String) {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let key = rsa::RsaPrivateKey::new(&mut rand_core_rng(), 2048).unwrap();
    let der = key.to_pkcs8_der().unwrap();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(der.as_bytes()).unwrap();
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "RS256"}).to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let mut sig = vec![0; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signed.as_bytes(),
        &mut sig,
    )
    .unwrap();
    let pem = key
        .to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    (format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig)), pem)
}

fn rand_core_rng() -> rsa::rand_core::OsRng {
    rsa::rand_core::OsRng
}

#[test]
fn decodes_header_payload_and_signature() {
    let t = hs256(b"k", json!({"sub": "alice"}));
    let d = decode(&t).unwrap();
    assert_eq!(d.alg(), "HS256");
    assert_eq!(d.payload["sub"], "alice");
    assert_eq!(d.signature.len(), 32);
}

#[test]
fn rejects_malformed_tokens() {
    for bad in [
        "",
        "a.b",
        "a.b.c.d.e",
        "!!!.e30.",
        "e30.!!!.",
        "W10.e30.",                     // header is an array
        "bm90IGpzb24.e30.",             // header is not JSON
        &"a".repeat(MAX_TOKEN_LEN + 1), // oversized
    ] {
        assert!(decode(bad).is_err(), "{bad:.40}");
    }
}

#[test]
fn verifies_hs256_and_refuses_a_wrong_secret() {
    let t = hs256(b"secret", json!({}));
    let d = decode(&t).unwrap();
    assert!(verify_with(&d, "HS256", &Key::Hmac(b"secret".to_vec())).unwrap());
    assert!(!verify_with(&d, "HS256", &Key::Hmac(b"other".to_vec())).unwrap());
}

#[test]
fn verifies_es256_with_certificate_and_jwks() {
    let s = EcSigner::new();
    let t = s.sign(json!({"alg": "ES256", "kid": "k1"}), json!({"sub": "x"}));
    let d = decode(&t).unwrap();
    assert!(verify_any(&d, "ES256", &parse_keys(&s.cert_pem).unwrap()).unwrap());
    assert!(verify_any(&d, "ES256", &parse_keys(&s.jwks("k1")).unwrap()).unwrap());
    // A JWKS whose only key has another kid does not verify it.
    assert!(!verify_any(&d, "ES256", &parse_keys(&s.jwks("k2")).unwrap()).unwrap());
    // Another key does not verify it.
    let other = EcSigner::new();
    assert!(!verify_any(&d, "ES256", &parse_keys(&other.cert_pem).unwrap()).unwrap());
}

#[test]
fn verifies_rs256_with_a_pem_public_key() {
    let (t, pem) = rsa_token(json!({"sub": "svc"}));
    let d = decode(&t).unwrap();
    let keys = parse_keys(&pem).unwrap();
    assert!(verify_any(&d, "RS256", &keys).unwrap());
    // The same signature does not pass as PS256, nor as an HMAC with the key's text.
    assert!(!verify_any(&d, "PS256", &keys).unwrap());
    assert!(!verify_with(&d, "HS256", &Key::Hmac(pem.into_bytes())).unwrap());
}

#[test]
fn refuses_alg_none_and_unknown_algorithms() {
    let d = decode("eyJhbGciOiJub25lIn0.e30.").unwrap();
    assert!(verify_with(&d, "none", &Key::Hmac(vec![])).is_err());
    assert!(!verify_with(&d, "ES512", &Key::Ec(vec![4; 133])).unwrap());
}

#[test]
fn rejects_malformed_key_documents() {
    for bad in [
        "",
        "not a key",
        "{\"keys\": 3}",
        "{\"kty\": \"EC\", \"crv\": \"P-521\", \"x\": \"AA\", \"y\": \"AA\"}",
        "{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"AA\", \"y\": \"AA\"}",
        "{\"kty\": \"RSA\"}",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        // An HMAC key anybody can sign with.
        "{\"kty\": \"oct\", \"k\": \"\"}",
    ] {
        assert!(parse_keys(bad).is_err(), "{bad}");
    }
    assert!(parse_keys(&" ".repeat(MAX_KEY_LEN + 1)).is_err());
}

#[test]
fn checks_exp_nbf_iss_and_aud_like_opa() {
    let now = 1_700_000_000_i128 * 1_000_000_000;
    let c = |iss: Option<&str>, aud: Option<&str>| Claims {
        iss: iss.map(str::to_owned),
        aud: aud.map(str::to_owned),
        now_ns: now,
    };
    let p = json!({"exp": 1_700_000_100, "nbf": 1_699_999_000, "iss": "i", "aud": ["a", "b"]});
    assert!(claims_hold(&p, &c(Some("i"), Some("b"))));
    assert!(!claims_hold(&p, &c(Some("j"), Some("b"))));
    assert!(
        !claims_hold(&p, &c(None, None)),
        "a token with aud needs one named"
    );
    assert!(!claims_hold(&p, &c(None, Some("z"))));
    assert!(!claims_hold(&json!({"exp": 1_699_999_999}), &c(None, None)));
    assert!(!claims_hold(&json!({"nbf": 1_700_000_001}), &c(None, None)));
    assert!(!claims_hold(&json!({"exp": "soon"}), &c(None, None)));
    assert!(!claims_hold(&json!({}), &c(None, Some("a"))));
    assert!(claims_hold(&json!({}), &c(None, None)));
}

#[test]
fn an_empty_hmac_secret_verifies_nothing_not_even_its_own_signature() {
    let forged = hs256(b"", json!({"role": "admin"}));
    let d = decode(&forged).unwrap();
    assert!(!verify_with(&d, "HS256", &Key::Hmac(Vec::new())).unwrap());
}

#[test]
fn a_crit_header_is_refused_in_every_form() {
    let es = EcSigner::new();
    let keys = parse_keys(&es.cert_pem).unwrap();
    for header in [
        json!({"alg": "ES256", "crit": ["x-unknown"], "x-unknown": 1}),
        json!({"alg": "ES256", "crit": ["x-unknown"]}), // listed, not present
        json!({"alg": "ES256", "crit": []}),
        json!({"alg": "ES256", "crit": "x-unknown", "x-unknown": 1}),
        json!({"alg": "ES256", "crit": [7]}),
        json!({"alg": "ES256", "crit": ["kid"], "kid": "k"}),
        json!({"alg": "ES256", "crit": ["b64"], "b64": false}), // RFC 7797: not implemented
    ] {
        assert!(check_crit(&header).is_err(), "{header}");
        let t = es.sign(header.clone(), json!({"sub": "x"}));
        let d = decode(&t).unwrap();
        assert!(!verify_any(&d, "ES256", &keys).unwrap(), "{header}");
    }
    assert!(check_crit(&json!({"alg": "ES256"})).is_ok());
}
