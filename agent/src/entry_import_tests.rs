#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::entry::Selector;
use esm_identity::SpiffeId;

const NOW: &str = "2026-12-03T00:00:00Z";

fn line(spiffe: &str, uid: u32) -> String {
    format!(r#"{{"spiffe_id":"{spiffe}","selectors":["unix:uid:{uid}"]}}"#)
}

fn parsed(lines: &[String]) -> Vec<(usize, ImportedEntry)> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| (i + 1, parse_line(i + 1, l.as_bytes()).unwrap().unwrap()))
        .collect()
}

fn counter() -> impl FnMut() -> Result<String> {
    let mut n = 0u32;
    move || {
        n += 1;
        Ok(format!("{n:08x}"))
    }
}

fn stored(id: &str, spiffe: &str, uid: u32) -> Entry {
    Entry {
        id: id.into(),
        spiffe_id: SpiffeId::parse(spiffe).unwrap(),
        selectors: [Selector::parse(&format!("unix:uid:{uid}")).unwrap()].into(),
        ttl_secs: None,
        dns_names: vec![],
        created_at: NOW.into(),
    }
}

#[test]
fn lines_are_cut_across_chunks_and_numbered() {
    let mut l = Lines::default();
    let mut got = l.push(b"ab").unwrap();
    got.extend(l.push(b"c\n\nde").unwrap());
    got.extend(l.push(b"f\ng").unwrap());
    assert_eq!(
        got,
        vec![(1, b"abc".to_vec()), (2, vec![]), (3, b"def".to_vec())]
    );
    assert_eq!(l.finish(), Some((4, b"g".to_vec())));
}

#[test]
fn a_line_longer_than_the_limit_is_refused_before_it_is_held() {
    let mut l = Lines::default();
    l.push(b"{}\n").unwrap();
    l.push(&vec![b'x'; MAX_LINE]).unwrap();
    let e = l.push(b"x").unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("longer"), "{e}");
}

#[test]
fn a_stream_longer_than_the_limit_is_refused() {
    let mut l = Lines::with_limit(10);
    assert_eq!(l.push(b"{}\n{}\n").unwrap().len(), 2);
    l.push(b"{}\n{").unwrap();
    let e = l.push(b"}").unwrap_err().to_string();
    assert!(e.contains("more than 10 bytes"), "{e}");
}

#[test]
fn blank_lines_are_skipped() {
    assert!(parse_line(1, b"   \r").unwrap().is_none());
}

#[test]
fn malformed_lines_are_refused_naming_the_line_and_the_fault() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"\xff\xfe{}".to_vec(), "not UTF-8"),
        (b"[1,2]".to_vec(), "not a JSON object"),
        (b"{\"spiffe_id\":".to_vec(), "EOF"),
        (
            br#"{"spiffe_id":"http://x/y","selectors":["unix:uid:1"]}"#.to_vec(),
            "spiffe",
        ),
        (
            br#"{"spiffe_id":"spiffe://example.org/a","selectors":["unix:uid:x"]}"#.to_vec(),
            "not a number",
        ),
        (
            br#"{"spiffe_id":"spiffe://example.org/a","selectors":[]}"#.to_vec(),
            "at least one selector",
        ),
        (
            br#"{"spiffe_id":"spiffe://example.org/a","selectors":["unix:uid:1"],"admin":true}"#
                .to_vec(),
            "unknown field",
        ),
        (
            br#"{"id":"zz","spiffe_id":"spiffe://example.org/a","selectors":["unix:uid:1"]}"#
                .to_vec(),
            "not an entry id",
        ),
        (
            br#"{"spiffe_id":"spiffe://example.org/a","selectors":["unix:uid:1"],"created_at":"yesterday"}"#
                .to_vec(),
            "RFC 3339",
        ),
    ];
    for (raw, why) in cases {
        let e = parse_line(7, &raw).unwrap_err().to_string();
        assert!(
            e.contains("line 7") && e.to_lowercase().contains(&why.to_lowercase()),
            "{e}"
        );
    }
}

#[test]
fn too_many_selectors_are_refused() {
    let sels: Vec<String> = (0..=crate::entry::MAX_SELECTORS)
        .map(|n| format!("\"unix:uid:{n}\""))
        .collect();
    let raw = format!(
        r#"{{"spiffe_id":"spiffe://example.org/a","selectors":[{}]}}"#,
        sels.join(",")
    );
    let e = parse_line(3, raw.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("line 3") && e.contains("selectors"), "{e}");
}

#[test]
fn esms_own_identity_is_refused_as_reserved() {
    let raw = line("spiffe://example.org/esm/agent", 1);
    let e = parse_line(1, raw.as_bytes()).unwrap_err();
    assert!(matches!(e, Error::Reserved(_)), "{e}");
}

#[test]
fn entries_already_stored_or_repeated_are_left_alone() {
    let existing = [stored("aa", "spiffe://example.org/a", 1)];
    let lines = parsed(&[
        line("spiffe://example.org/a", 1),
        line("spiffe://example.org/b", 2),
        line("spiffe://example.org/b", 2),
        line("spiffe://example.org/a", 3),
    ]);
    let p = plan(&existing, lines, NOW, counter()).unwrap();
    let got: Vec<_> = p
        .added
        .iter()
        .map(|e| (e.id.as_str(), e.spiffe_id.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("00000001", "spiffe://example.org/b"),
            ("00000002", "spiffe://example.org/a")
        ]
    );
    assert_eq!(p.present, 2);
    assert!(p.added.iter().all(|e| e.created_at == NOW));
}

#[test]
fn importing_what_list_printed_again_adds_nothing() {
    let existing = [
        stored("aa", "spiffe://example.org/a", 1),
        stored("bb", "spiffe://example.org/b", 2),
    ];
    let lines: Vec<String> = existing
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let p = plan(&existing, parsed(&lines), NOW, counter()).unwrap();
    assert!(p.added.is_empty());
    assert_eq!(p.present, 2);
}

#[test]
fn a_kept_id_naming_another_entry_is_refused() {
    let existing = [stored("aa", "spiffe://example.org/a", 1)];
    let raw = r#"{"id":"aa","spiffe_id":"spiffe://example.org/z","selectors":["unix:uid:9"]}"#;
    let lines = vec![(4, parse_line(4, raw.as_bytes()).unwrap().unwrap())];
    let e = plan(&existing, lines, NOW, counter())
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 4") && e.contains("aa"), "{e}");
    // The same entry under another id is not a second copy either.
    let raw = r#"{"id":"bb","spiffe_id":"spiffe://example.org/a","selectors":["unix:uid:1"]}"#;
    let lines = vec![(5, parse_line(5, raw.as_bytes()).unwrap().unwrap())];
    let e = plan(&existing, lines, NOW, counter())
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 5") && e.contains("entry aa"), "{e}");
}

#[test]
fn an_import_passing_the_store_limit_is_refused_whole() {
    let existing: Vec<Entry> = (0..MAX_ENTRIES as u32 - 1)
        .map(|n| stored(&format!("{n:x}"), &format!("spiffe://example.org/{n}"), n))
        .collect();
    let lines = parsed(&[
        line("spiffe://example.org/new1", 1),
        line("spiffe://example.org/new2", 2),
    ]);
    let e = plan(&existing, lines, NOW, counter())
        .unwrap_err()
        .to_string();
    assert!(e.contains("limit"), "{e}");
    let one = parsed(&[line("spiffe://example.org/new1", 1)]);
    assert_eq!(plan(&existing, one, NOW, counter()).unwrap().added.len(), 1);
}
