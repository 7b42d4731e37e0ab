#![allow(clippy::unwrap_used)]

use super::challenge::{parse, resource_matches_vault, Challenge};
use super::retry::{delay, is_retryable, parse_retry_after, MAX_ATTEMPTS, MAX_DELAY};
use super::signature::{public_key_raw, signature_for_x509, verify};
use super::*;
use std::time::Duration;

#[test]
fn reads_tenant_and_resource_from_the_vault_challenge() {
    let h = r#"Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net""#;
    let c = parse(h).unwrap();
    assert_eq!(
        c,
        Challenge {
            tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47".into(),
            resource: "https://vault.azure.net".into(),
        }
    );
    assert_eq!(c.scope(), "https://vault.azure.net/.default");
}

#[test]
fn reads_a_scope_challenge_and_unquoted_values() {
    let h = "bearer authorization_uri=https://login.example/tenant-1/, scope=\"https://vault.azure.net/.default\"";
    let c = parse(h).unwrap();
    assert_eq!(c.tenant, "tenant-1");
    assert_eq!(c.resource, "https://vault.azure.net");
}

#[test]
fn refuses_challenges_it_cannot_use() {
    assert!(parse("Basic realm=\"x\"").is_none());
    assert!(parse("Bearer resource=\"https://vault.azure.net\"").is_none());
    assert!(parse("Bearer authorization=\"https://login/t\"").is_none());
    // A plain-http audience, and a tenant that smuggles a path or query.
    assert!(
        parse(r#"Bearer authorization="https://l/t", resource="http://vault.azure.net""#).is_none()
    );
    assert!(
        parse(r#"Bearer authorization="https://l/t?x=1", resource="https://vault.azure.net""#)
            .is_none()
    );
}

#[test]
fn refuses_a_challenge_resource_outside_the_vault_domain() {
    assert!(resource_matches_vault(
        "https://vault.azure.net",
        "myvault.vault.azure.net"
    ));
    assert!(resource_matches_vault(
        "https://vault.azure.net/",
        "MyVault.Vault.Azure.Net"
    ));
    // An attacker-run "vault" asking for an ARM or Graph token, or a look-alike suffix.
    assert!(!resource_matches_vault(
        "https://management.azure.com",
        "myvault.vault.azure.net"
    ));
    assert!(!resource_matches_vault(
        "https://ault.azure.net",
        "myvault.vault.azure.net"
    ));
    assert!(!resource_matches_vault(
        "https://vault.azure.net",
        "evil.example"
    ));
    assert!(!resource_matches_vault(
        "http://vault.azure.net",
        "myvault.vault.azure.net"
    ));
}

#[test]
fn retries_throttling_and_server_errors_only() {
    for s in [408, 429, 500, 502, 503, 504] {
        assert!(is_retryable(s), "{s}");
    }
    for s in [200, 400, 401, 403, 404, 409, 501] {
        assert!(!is_retryable(s), "{s}");
    }
}

#[test]
fn honours_retry_after_seconds_and_dates_within_a_bound() {
    assert_eq!(delay(1, Some("3"), 0), Some(Duration::from_secs(3)));
    assert_eq!(delay(1, Some("3600"), 0), Some(MAX_DELAY));
    // Sun, 06 Nov 1994 08:49:37 GMT is 784111777.
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_770),
        Some(Duration::from_secs(7))
    );
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_999),
        Some(Duration::ZERO)
    );
    assert_eq!(parse_retry_after("soon", 0), None);
    // Without a header: exponential backoff; never more than MAX_ATTEMPTS attempts.
    assert_eq!(delay(1, None, 0), Some(Duration::from_millis(250)));
    assert_eq!(
        delay(3, Some("garbage"), 0),
        Some(Duration::from_millis(1000))
    );
    assert_eq!(delay(MAX_ATTEMPTS, Some("1"), 0), None);
}

#[test]
fn raw_ecdsa_signature_becomes_der_that_verifies() {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let kp =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    for i in 0..50u8 {
        let msg = [i; 40];
        let raw = kp.sign(&rng, &msg).unwrap();
        let der = signature_for_x509(KeyAlgorithm::EcP256, raw.as_ref()).unwrap();
        assert!(verify(
            KeyAlgorithm::EcP256,
            kp.public_key().as_ref(),
            &msg,
            &der
        ));
        assert!(!verify(
            KeyAlgorithm::EcP256,
            kp.public_key().as_ref(),
            b"other",
            &der
        ));
    }
}

#[test]
fn der_integers_are_minimal_and_positive() {
    let mut raw = vec![0u8; 64];
    raw[0] = 0x80; // r has its top bit set: needs a leading 0
    raw[63] = 1; // s = 1 after 31 leading zero bytes
    let der = signature_for_x509(KeyAlgorithm::EcP256, &raw).unwrap();
    assert_eq!(&der[..4], &[0x30, 33 + 2 + 3, 0x02, 33]);
    assert_eq!(der[4], 0);
    assert_eq!(&der[der.len() - 3..], &[0x02, 1, 1]);
    // Wrong length, and r = 0, are refused.
    assert!(signature_for_x509(KeyAlgorithm::EcP256, &raw[..63]).is_err());
    assert!(signature_for_x509(KeyAlgorithm::EcP384, &raw).is_err());
    assert!(signature_for_x509(KeyAlgorithm::EcP256, &[0u8; 64]).is_err());
}

#[test]
fn jwk_public_keys_must_match_the_expected_algorithm() {
    let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
    let x = [7u8; 32];
    let mut y = [9u8; 32];
    y[0] = 0;
    let jwk = serde_json::json!({"kty": "EC-HSM", "crv": "P-256", "x": b(&x), "y": b(&y[1..])});
    let raw = public_key_raw(&jwk, KeyAlgorithm::EcP256).unwrap();
    assert_eq!(raw.len(), 65);
    assert_eq!(raw[0], 4);
    assert_eq!(&raw[33..], &y[..]);
    assert!(public_key_raw(&jwk, KeyAlgorithm::EcP384).is_err());
    let rsa = serde_json::json!({"kty": "RSA", "n": b(&[0xC5; 256]), "e": "AQAB"});
    assert!(public_key_raw(&rsa, KeyAlgorithm::Rsa3072).is_err());
    let mut n = vec![0xC5u8; 384];
    n[383] = 1;
    let rsa = serde_json::json!({"kty": "RSA", "n": b(&n), "e": "AQAB"});
    let der = public_key_raw(&rsa, KeyAlgorithm::Rsa3072).unwrap();
    // SEQUENCE { INTEGER (0x00 ‖ n), INTEGER 65537 }
    assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x8a]);
    assert_eq!(&der[der.len() - 5..], &[0x02, 3, 1, 0, 1]);
}

#[test]
fn refuses_vault_urls_that_are_not_plain_https() {
    assert_eq!(
        vault_host("https://MyVault.vault.azure.net/").unwrap(),
        "myvault.vault.azure.net"
    );
    assert_eq!(vault_host("https://127.0.0.1:8443").unwrap(), "127.0.0.1");
    assert_eq!(vault_host("https://[::1]:8443").unwrap(), "::1");
    for bad in [
        "http://myvault.vault.azure.net",
        "myvault.vault.azure.net",
        "https://",
        "https://v.vault.azure.net/keys",
        "https://user@v.vault.azure.net",
        "https://v.vault.azure.net:99999",
    ] {
        assert!(vault_host(bad).is_err(), "{bad}");
    }
}

fn config(url: &str) -> AzureKeyVaultConfig {
    AzureKeyVaultConfig {
        vault_url: url.into(),
        key_prefix: "esm-".into(),
        ca_file: None,
        auth: AuthMethod::Auto,
        authority_host: None,
        imds_endpoint: DEFAULT_IMDS_ENDPOINT.into(),
        verify_challenge_resource: true,
    }
}

#[test]
fn an_http_vault_url_is_a_configuration_error() {
    let e =
        AzureKeyVaultStore::new(&config("http://v.vault.azure.net"), &BTreeMap::new()).unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
}

#[test]
fn client_secret_never_appears_in_debug_output() {
    let env: BTreeMap<String, String> = [
        ("AZURE_TENANT_ID", "t1"),
        ("AZURE_CLIENT_ID", "c1"),
        ("AZURE_CLIENT_SECRET", "s3cr3t-value"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let store = AzureKeyVaultStore::new(&config("https://v.vault.azure.net"), &env).unwrap();
    let cred = credential(&config("https://v.vault.azure.net"), &env).unwrap();
    for text in [format!("{store:?}"), format!("{cred:?}")] {
        assert!(!text.contains("s3cr3t"), "{text}");
    }
    assert!(format!("{cred:?}").contains("c1"));
}

#[test]
fn auto_auth_picks_managed_identity_without_a_secret() {
    let cred = credential(&config("https://v.vault.azure.net"), &BTreeMap::new()).unwrap();
    assert!(matches!(cred, Credential::ManagedIdentity { .. }));
    let mut cfg = config("https://v.vault.azure.net");
    cfg.auth = AuthMethod::ClientSecret;
    let e = credential(&cfg, &BTreeMap::new()).unwrap_err();
    assert!(e.to_string().contains("AZURE_CLIENT_SECRET"), "{e}");
}

#[test]
fn tokens_are_refreshed_before_they_expire() {
    use super::auth::refresh_after;
    assert_eq!(
        refresh_after(Duration::from_secs(3600)),
        Duration::from_secs(3300)
    );
    assert_eq!(
        refresh_after(Duration::from_secs(4)),
        Duration::from_secs(2)
    );
    assert_eq!(refresh_after(Duration::ZERO), Duration::ZERO);
}

#[test]
fn token_responses_of_entra_and_imds_both_parse() {
    use super::auth::parse_token_response;
    let entra =
        serde_json::json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "a"});
    let imds = serde_json::json!({"access_token": "b", "expires_in": "86399", "resource": "r"});
    assert_eq!(
        parse_token_response(&entra).unwrap().1,
        Duration::from_secs(3599)
    );
    assert_eq!(
        parse_token_response(&imds).unwrap().1,
        Duration::from_secs(86399)
    );
    assert!(parse_token_response(&serde_json::json!({"access_token": ""})).is_err());
}

#[test]
fn service_errors_are_one_line() {
    use super::client::service_message;
    let body =
        r#"{"error":{"code":"Forbidden","message":"Caller is not authorized.\nInnerError"}}"#;
    assert_eq!(
        service_message(body),
        "Forbidden: Caller is not authorized. InnerError"
    );
    assert_eq!(
        service_message(r#"{"error":"invalid_client","error_description":"bad secret"}"#),
        "invalid_client: bad secret"
    );
    assert_eq!(service_message(""), "(empty body)");
    assert!(!service_message(&"x\n".repeat(1000)).contains('\n'));
}
