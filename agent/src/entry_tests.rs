#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn entry(id: &str, spiffe: &str, sels: &[&str]) -> Entry {
    Entry {
        id: id.into(),
        spiffe_id: SpiffeId::parse(spiffe).unwrap(),
        selectors: sels.iter().map(|s| sel(s)).collect(),
        ttl_secs: None,
        dns_names: vec![],
        created_at: String::new(),
    }
}

#[test]
fn parses_unix_and_spiffe_selectors() {
    for ok in [
        "unix:uid:1000",
        "unix:gid:0",
        "unix:path:/usr/bin/envoy",
        "spiffe:spiffe://example.org/admin",
    ] {
        assert_eq!(sel(ok).as_str(), ok);
    }
}

#[test]
fn rejects_malformed_selectors() {
    let long = format!("unix:path:/{}", "a".repeat(MAX_SELECTOR_LEN));
    for bad in [
        "",
        "unix",
        "unix:uid",
        "unix:uid:-1",
        "unix:uid:abc",
        "unix:pid:1",
        "unix:path:relative",
        "k8s:ns:default",
        "spiffe:http://x",
        "unix:path:/a\nb",
        long.as_str(),
    ] {
        assert!(Selector::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn an_entry_matches_when_all_its_selectors_are_the_callers() {
    let entries = vec![
        entry("a", "spiffe://example.org/web", &["unix:uid:1000"]),
        entry(
            "b",
            "spiffe://example.org/envoy",
            &["unix:uid:1000", "unix:path:/usr/bin/envoy"],
        ),
        entry("c", "spiffe://example.org/db", &["unix:uid:2000"]),
    ];
    let caller: BTreeSet<_> = ["unix:uid:1000", "unix:gid:1000", "unix:path:/usr/bin/envoy"]
        .iter()
        .map(|s| sel(s))
        .collect();
    let ids: Vec<_> = matching(&entries, &caller)
        .iter()
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    let other: BTreeSet<_> = [sel("unix:uid:1000")].into();
    let ids: Vec<_> = matching(&entries, &other)
        .iter()
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(ids, ["a"]);
    assert!(matching(&entries, &BTreeSet::new()).is_empty());
}

#[test]
fn new_entries_are_bounded() {
    let mut e = NewEntry {
        spiffe_id: SpiffeId::parse("spiffe://example.org/web").unwrap(),
        selectors: [sel("unix:uid:1")].into(),
        ttl_secs: Some(60),
        dns_names: vec!["web.local".into()],
    };
    e.check().unwrap();
    e.dns_names = vec!["bad name".into()];
    assert!(e.check().is_err());
    e.dns_names.clear();
    e.ttl_secs = Some(0);
    assert!(e.check().is_err());
    e.ttl_secs = None;
    e.selectors = SelectorSet::default();
    assert!(e.check().is_err());
    let parsed: std::result::Result<NewEntry, _> =
        serde_json::from_str(r#"{"spiffe_id": "spiffe://example.org/x", "selectors": ["nope"]}"#);
    assert!(parsed.is_err());
}

#[test]
fn an_entry_granting_esms_own_identity_is_refused() {
    for reserved in [
        "spiffe://example.org/esm/agent",
        "spiffe://example.org/esm",
        "spiffe://example.org/esm/agent/x",
    ] {
        let e = NewEntry {
            spiffe_id: SpiffeId::parse(reserved).unwrap(),
            selectors: [sel("unix:uid:65534")].into(),
            ttl_secs: None,
            dns_names: vec![],
        };
        let err = e.check().err();
        assert!(
            matches!(err, Some(Error::Reserved(_))),
            "{reserved}: {err:?}"
        );
    }
}

#[test]
fn selector_sets_are_sorted_without_repeats_and_read_as_json_arrays() {
    let set: SelectorSet =
        serde_json::from_str(r#"["unix:uid:2", "unix:gid:1", "unix:uid:2"]"#).unwrap();
    assert_eq!(
        set.iter().map(Selector::as_str).collect::<Vec<_>>(),
        ["unix:gid:1", "unix:uid:2"]
    );
    assert_eq!(
        serde_json::to_string(&set).unwrap(),
        r#"["unix:gid:1","unix:uid:2"]"#
    );
    let caller: BTreeSet<Selector> = [sel("unix:uid:2"), sel("unix:gid:1"), sel("unix:uid:9")]
        .into_iter()
        .collect();
    assert!(set.is_subset(&caller));
    assert!(!set.is_subset(&[sel("unix:uid:2")].into_iter().collect()));
    assert!(serde_json::from_str::<SelectorSet>(r#"["unix:uid:x"]"#).is_err());
}
