#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::entry::matching;
use esm_identity::SpiffeId;

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

fn caller(sels: &[&str]) -> BTreeSet<Selector> {
    sels.iter().map(|s| sel(s)).collect()
}

fn ids<'a>(found: impl IntoIterator<Item = &'a Entry>) -> Vec<&'a str> {
    found.into_iter().map(|e| e.id.as_str()).collect()
}

/// Entries sharing selectors in every way that matters: one selector, several, a gid
/// shared by many, the same SPIFFE ID twice, one selector being the only one in common.
fn mixed() -> Vec<Entry> {
    let mut v = vec![
        entry("a", "spiffe://example.org/web", &["unix:uid:1000"]),
        entry(
            "b",
            "spiffe://example.org/envoy",
            &["unix:uid:1000", "unix:path:/usr/bin/envoy"],
        ),
        entry("c", "spiffe://example.org/ops", &["unix:gid:50"]),
        entry(
            "d",
            "spiffe://example.org/web",
            &["unix:gid:50", "unix:uid:1001"],
        ),
        entry("e", "spiffe://example.org/root", &["unix:uid:0"]),
    ];
    for n in 0..50 {
        v.push(entry(
            &format!("g{n}"),
            &format!("spiffe://example.org/svc{n}"),
            &["unix:gid:50", &format!("unix:uid:{}", 2000 + n)],
        ));
    }
    v
}

#[test]
fn index_finds_the_same_entries_as_a_scan_in_store_order() {
    let all = mixed();
    let set = EntrySet::new(all.clone());
    for c in [
        caller(&["unix:uid:1000"]),
        caller(&["unix:uid:1000", "unix:path:/usr/bin/envoy", "unix:gid:1000"]),
        caller(&["unix:uid:1001", "unix:gid:50"]),
        caller(&["unix:uid:2007", "unix:gid:50", "unix:path:/bin/sh"]),
        caller(&["unix:uid:2007"]),
        caller(&["unix:gid:50"]),
        caller(&["unix:uid:0", "unix:gid:0"]),
        caller(&["unix:uid:9"]),
        caller(&[]),
    ] {
        assert_eq!(ids(set.matching(&c)), ids(matching(&all, &c)), "{c:?}");
    }
}

#[test]
fn an_entry_needing_a_selector_the_caller_lacks_is_not_matched() {
    let set = EntrySet::new(mixed());
    // uid 2007's entry also needs gid 50.
    assert!(set.matching(&caller(&["unix:uid:2007"])).is_empty());
    assert_eq!(
        ids(set.matching(&caller(&["unix:uid:2007", "unix:gid:50"]))),
        ["c", "g7"]
    );
}

#[test]
fn an_entry_is_filed_under_its_rarest_selector() {
    let set = EntrySet::new(mixed());
    // 52 entries share gid 50; none is filed under it but the one that has nothing else.
    assert_eq!(
        set.filed_under(&sel("unix:gid:50")).collect::<Vec<_>>(),
        [2]
    );
    assert_eq!(set.filed_under(&sel("unix:uid:2003")).count(), 1);
    assert_eq!(set.by_selector.len(), set.len(), "each entry filed once");
}

#[test]
fn an_empty_set_matches_nothing() {
    let set = EntrySet::default();
    assert!(set.is_empty());
    assert!(set.matching(&caller(&["unix:uid:0"])).is_empty());
}

#[test]
fn an_entry_without_selectors_read_from_a_store_matches_nobody() {
    let set = EntrySet::new(vec![entry("z", "spiffe://example.org/z", &[])]);
    assert_eq!(set.len(), 1);
    assert!(set.matching(&caller(&["unix:uid:0"])).is_empty());
}

#[test]
fn one_entry_among_100000_is_found() {
    let all: Vec<Entry> = (0..100_000)
        .map(|n| {
            entry(
                &format!("{n:x}"),
                &format!("spiffe://example.org/w/{n}"),
                &[&format!("unix:uid:{n}")],
            )
        })
        .collect();
    let set = EntrySet::new(all);
    let found = set.matching(&caller(&["unix:uid:73123", "unix:gid:73123"]));
    assert_eq!(ids(found), [format!("{:x}", 73123).as_str()]);
}
