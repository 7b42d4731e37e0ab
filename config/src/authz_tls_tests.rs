#![allow(clippy::unwrap_used)]
use std::collections::BTreeMap;

use esm_ca::key_backend::KeyAlgorithm;

use super::*;
use crate::{default_toml, Config};

fn parse_with(text_extra: &str, vars: &[(&str, &str)]) -> crate::Result<Config> {
    let td = TrustDomain::parse("example.org").unwrap();
    let text = default_toml(&td, KeyAlgorithm::EcP256, "file", "file");
    // The documented keys, changed where the test says: replaced in place, since the file
    // already has them.
    let text = text_extra
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .fold(text, |t, (k, v)| {
            let old = t
                .lines()
                .find(|l| l.starts_with(&format!("{k} = ")))
                .unwrap()
                .to_owned();
            t.replace(&old, &format!("{k} = {v}"))
        });
    let env: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::parse(&text, "/d".into(), &env)
}

fn ids(c: &Config) -> Vec<&str> {
    c.authz
        .tls
        .as_ref()
        .unwrap()
        .allowed_spiffe_ids
        .iter()
        .map(SpiffeId::as_str)
        .collect()
}

#[test]
fn tls_is_off_by_default_and_the_list_is_empty() {
    let c = parse_with("", &[]).unwrap();
    assert_eq!(c.authz.tls, None);
}

#[test]
fn tls_with_an_empty_list_admits_any_svid_of_the_trust_domain() {
    let c = parse_with("tls = true", &[]).unwrap();
    assert_eq!(ids(&c), Vec::<&str>::new());
    let c = parse_with("", &[("ESM_AUTHZ_TLS", "true")]).unwrap();
    assert!(c.authz.tls.is_some());
}

#[test]
fn allowed_spiffe_ids_come_from_the_file_or_a_separated_variable() {
    let c = parse_with(
        "tls = true\nallowed_spiffe_ids = [\"spiffe://example.org/ns/edge/sa/envoy\", \"spiffe://example.org/ns/edge/sa/envoy\"]",
        &[],
    )
    .unwrap();
    assert_eq!(ids(&c), vec!["spiffe://example.org/ns/edge/sa/envoy"]);
    let c = parse_with(
        "",
        &[
            ("ESM_AUTHZ_TLS", "1"),
            (
                "ESM_AUTHZ_ALLOWED_SPIFFE_IDS",
                "spiffe://example.org/a, spiffe://example.org/b spiffe://example.org/c",
            ),
        ],
    )
    .unwrap();
    assert_eq!(
        ids(&c),
        vec![
            "spiffe://example.org/a",
            "spiffe://example.org/b",
            "spiffe://example.org/c"
        ]
    );
}

#[test]
fn an_invalid_allowed_spiffe_id_is_an_error_naming_the_key() {
    for (id, why) in [
        ("https://example.org/a", "scheme"),
        ("spiffe://example.org/a/../b", ""),
        ("spiffe://Example.org/a", ""),
        ("spiffe://example.org", "trust domain's own ID"),
        ("spiffe://example.org/esm/authz", "esm's own"),
        (
            "spiffe://other.org/envoy",
            "not of the trust domain example.org",
        ),
    ] {
        let err = parse_with(
            "",
            &[
                ("ESM_AUTHZ_TLS", "true"),
                ("ESM_AUTHZ_ALLOWED_SPIFFE_IDS", id),
            ],
        )
        .unwrap_err();
        assert_eq!(err.key(), Some("authz.allowed_spiffe_ids"), "{id}");
        let msg = err.chain();
        assert!(
            msg.contains("authz.allowed_spiffe_ids") && msg.contains(why),
            "{id}: {msg}"
        );
    }
    let err = parse_with("tls = true\nallowed_spiffe_ids = [1]", &[]).unwrap_err();
    assert!(
        err.chain().contains("allowed_spiffe_ids"),
        "{}",
        err.chain()
    );
}

#[test]
fn a_list_without_tls_or_tls_without_a_tcp_listener_is_refused() {
    let err = parse_with(
        "",
        &[("ESM_AUTHZ_ALLOWED_SPIFFE_IDS", "spiffe://example.org/envoy")],
    )
    .unwrap_err();
    assert_eq!(err.key(), Some("authz.allowed_spiffe_ids"));
    assert!(
        err.chain().contains("authz.tls is false"),
        "{}",
        err.chain()
    );
    let err = parse_with(
        "",
        &[
            ("ESM_AUTHZ_TLS", "true"),
            ("ESM_AUTHZ_LISTEN", ""),
            ("ESM_AUTHZ_LISTEN_UNIX", "authz.sock"),
        ],
    )
    .unwrap_err();
    assert_eq!(err.key(), Some("authz.tls"));
}
