use super::*;
use proptest::prelude::*;

#[test]
fn accepts_the_valid_table() {
    for s in [
        "spiffe://example.org",
        "spiffe://example.org/ns/prod/sa/web",
        "spiffe://a",
        "spiffe://x-y_z.1/A.b-C_d",
        "spiffe://example.org/..a/a..",
        "spiffe://example.org/.../x",
        "spiffe://1.2.3.4/ip/trust/domain",
    ] {
        let id = SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(id.as_str(), s);
        assert_eq!(id.to_string(), s);
    }
}

#[test]
fn rejects_the_invalid_table_with_the_specific_reason() {
    use SpiffeIdError::*;
    let long_td = format!("spiffe://{}", "a".repeat(256));
    let long_id = format!("spiffe://example.org/{}", "a".repeat(2048));
    let cases: Vec<(&str, SpiffeIdError)> = vec![
        ("", Empty),
        ("example.org/x", WrongScheme),
        ("http://example.org/x", WrongScheme),
        ("SPIFFE://example.org/x", WrongScheme),
        ("spiffe:/example.org/x", WrongScheme),
        ("spiffe://", MissingTrustDomain),
        ("spiffe:///path", MissingTrustDomain),
        ("spiffe://Example.org/x", BadTrustDomainChar),
        ("spiffe://exa mple.org", BadTrustDomainChar),
        ("spiffe://ex%41mple.org", BadTrustDomainChar),
        ("spiffe://example.org:8080/x", Port),
        ("spiffe://user@example.org/x", UserInfo),
        ("spiffe://example.org/x?y=1", Query),
        ("spiffe://example.org?y", Query),
        ("spiffe://example.org/x#frag", Fragment),
        ("spiffe://example.org/", TrailingSlash),
        ("spiffe://example.org/x/", TrailingSlash),
        ("spiffe://example.org//x", EmptySegment),
        ("spiffe://example.org/./x", DotSegment),
        ("spiffe://example.org/x/..", DotSegment),
        ("spiffe://example.org/a%20b", BadPathChar),
        ("spiffe://example.org/a b", BadPathChar),
        ("spiffe://example.org/\u{e9}", BadPathChar),
        ("spiffe://example.org/a:b", BadPathChar),
        (&long_td, TrustDomainTooLong),
        (&long_id, TooLong),
    ];
    for (s, want) in cases {
        assert_eq!(SpiffeId::parse(s), Err(want.clone()), "{s:?}");
    }
}

#[test]
fn splits_trust_domain_and_path() {
    let id = SpiffeId::parse("spiffe://example.org/ns/web").unwrap();
    assert_eq!(id.trust_domain().as_str(), "example.org");
    assert_eq!(id.path(), "/ns/web");
    assert!(!id.is_trust_domain_id());
    assert!(SpiffeId::parse("spiffe://example.org")
        .unwrap()
        .is_trust_domain_id());
}

#[test]
fn trust_domain_parses_bare_names_and_ids() {
    assert_eq!(
        TrustDomain::parse("example.org").unwrap().as_str(),
        "example.org"
    );
    assert_eq!(
        TrustDomain::parse("spiffe://example.org/x")
            .unwrap()
            .as_str(),
        "example.org"
    );
    assert!(TrustDomain::parse("Example.org").is_err());
    assert!(TrustDomain::parse("").is_err());
    assert!(TrustDomain::parse("https://example.org").is_err());
    assert_eq!(
        TrustDomain::parse("example.org").unwrap().id().as_str(),
        "spiffe://example.org"
    );
}

fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,12}".prop_filter("no dot segments", |s| s != "." && s != "..")
}

#[test]
fn esm_and_every_id_under_it_are_reserved_and_look_alikes_are_not() {
    for reserved in [
        "spiffe://example.org/esm",
        "spiffe://example.org/esm/agent",
        "spiffe://example.org/esm/agent/extra",
        "spiffe://other.org/esm/anything",
    ] {
        assert!(
            SpiffeId::parse(reserved).unwrap().is_reserved_for_esm(),
            "{reserved}"
        );
    }
    for free in [
        "spiffe://example.org",
        "spiffe://example.org/esmx",
        "spiffe://example.org/esm-agent",
        "spiffe://example.org/ns/esm/agent",
        "spiffe://esm/agent",
        "spiffe://example.org/ESM/agent",
    ] {
        assert!(
            !SpiffeId::parse(free).unwrap().is_reserved_for_esm(),
            "{free}"
        );
    }
}

proptest! {
    #[test]
    fn every_well_formed_id_round_trips(
        td in "[a-z0-9._-]{1,40}",
        segs in proptest::collection::vec(segment(), 0..6),
    ) {
        let s = format!("spiffe://{td}{}", segs.iter().map(|s| format!("/{s}")).collect::<String>());
        let id = SpiffeId::parse(&s).unwrap();
        prop_assert_eq!(id.as_str(), s.as_str());
        prop_assert_eq!(id.trust_domain().as_str(), td.as_str());
    }

    #[test]
    fn never_panics_and_accepts_only_the_grammar(s in "\\PC{0,80}") {
        if let Ok(id) = SpiffeId::parse(&s) {
            prop_assert!(id.as_str().starts_with("spiffe://"));
            prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"/:._-".contains(&b)));
        }
    }

    #[test]
    fn check_agrees_with_parse(s in "(spiffe://)?\\PC{0,60}") {
        match (SpiffeId::check(&s), SpiffeId::parse(&s)) {
            (Ok(td_len), Ok(id)) => prop_assert_eq!(td_len, id.trust_domain().as_str().len()),
            (Err(a), Err(b)) => prop_assert_eq!(a, b),
            (a, b) => prop_assert!(false, "check {a:?} but parse {b:?}"),
        }
    }

    #[test]
    fn uppercase_in_trust_domain_is_refused(td in "[a-z]{0,5}[A-Z][a-z]{0,5}") {
        prop_assert_eq!(
            SpiffeId::parse(&format!("spiffe://{td}/x")),
            Err(SpiffeIdError::BadTrustDomainChar)
        );
    }
}
