#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn entry(spiffe: &str) -> Entry {
    Entry {
        id: spiffe.into(),
        spiffe_id: SpiffeId::parse(spiffe).unwrap(),
        selectors: Default::default(),
        ttl_secs: None,
        dns_names: vec![],
        created_at: String::new(),
    }
}

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| s.to_string()).collect()
}

const WEB: &str = "spiffe://example.org/web";
const DB: &str = "spiffe://example.org/db";

#[test]
fn default_is_the_one_matching_entry() {
    let web = entry(WEB);
    let r = resolve(&names(&["default", "ROOTCA"]), &[&web], &td()).unwrap();
    assert_eq!(r[0].1, Want::Svid(web.spiffe_id.clone()));
    assert_eq!(r[1].1, Want::Bundle);
}

#[test]
fn default_is_refused_with_no_or_several_entries() {
    let (web, db) = (entry(WEB), entry(DB));
    assert!(matches!(
        resolve(&names(&["default"]), &[], &td()),
        Err(Refusal::NotEntitled(_))
    ));
    let e = resolve(&names(&["default"]), &[&web, &db], &td()).unwrap_err();
    assert!(matches!(e, Refusal::NotEntitled(m) if m.contains("2 entries")));
}

#[test]
fn a_spiffe_id_is_served_only_when_an_entry_grants_it() {
    let (web, db) = (entry(WEB), entry(DB));
    assert!(resolve(&names(&[DB]), &[&web, &db], &td()).is_ok());
    let e = resolve(&names(&[DB]), &[&web], &td()).unwrap_err();
    assert_eq!(e.status().code(), tonic::Code::PermissionDenied);
    let e = resolve(&names(&["spiffe://example.org/a/../b"]), &[&web], &td()).unwrap_err();
    assert_eq!(e.status().code(), tonic::Code::InvalidArgument);
}

#[test]
fn bundle_names_and_empty_means_everything() {
    let web = entry(WEB);
    for n in ["ROOTCA", "ALL", "spiffe://example.org", "example.org"] {
        assert_eq!(
            resolve(&names(&[n]), &[&web], &td()).unwrap()[0].1,
            Want::Bundle,
            "{n}"
        );
    }
    let all = resolve(&[], &[&web], &td()).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].0, WEB);
}

#[test]
fn unknown_and_too_many_names_are_refused() {
    let web = entry(WEB);
    assert!(resolve(&names(&["whatever"]), &[&web], &td()).is_err());
    let many: Vec<String> = (0..10_000).map(|i| format!("n{i}")).collect();
    let e = resolve(&many, &[&web], &td()).unwrap_err();
    assert_eq!(e.status().code(), tonic::Code::InvalidArgument);
}

#[test]
fn bundle_secret_is_a_validation_context_with_inline_roots() {
    let s = bundle_secret("ROOTCA", "-----BEGIN CERTIFICATE-----\n");
    let any = to_any(&s);
    assert_eq!(any.type_url, SECRET_TYPE);
    let back = Secret::decode(any.value.as_slice()).unwrap();
    assert_eq!(back.name, "ROOTCA");
    assert!(matches!(
        back.r#type,
        Some(secret::Type::ValidationContext(_))
    ));
}

#[test]
fn everything_lists_an_id_granted_by_two_entries_once() {
    let (web, db, web_again) = (entry(WEB), entry(DB), entry(WEB));
    let all = resolve(&[], &[&web, &db, &web_again], &td()).unwrap();
    let names: Vec<_> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [WEB, DB, "ROOTCA"]);
}
