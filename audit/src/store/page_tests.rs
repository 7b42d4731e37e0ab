use super::*;

fn build(rows: &[(u64, [&[u8]; 9])]) -> (Page, Option<Error>) {
    let mut b = PageBuilder::with_capacity(rows.len());
    for (seq, fields) in rows {
        b.row(*seq, *seq as i64 * 10);
        // As the readers do: text that is not UTF-8 is named before the failure after it.
        let failed = fields
            .iter()
            .try_for_each(|f| b.text(f))
            .and_then(|()| b.hashes(&[1; 32], &[2; 32]));
        if let Err(e) = failed {
            let (page, bad) = b.finish();
            return (page, Some(bad.unwrap_or(e)));
        }
    }
    b.finish()
}

const F: [&[u8]; 9] = [b"k", b"a", b"", b"act", b"allow", b"", b"c", b"n", b"{}"];

#[test]
fn rows_read_back_field_by_field() {
    let mut second = F;
    second[8] = b"{\"x\":1}";
    let (page, err) = build(&[(7, F), (8, second)]);
    assert!(err.is_none());
    assert_eq!(page.len(), 2);
    let r = page.get(1).unwrap();
    assert_eq!(
        (r.seq, r.time_ns, r.kind, r.details),
        (8, 80, "k", "{\"x\":1}")
    );
    assert_eq!(r.outcome, "allow");
    assert_eq!(
        page.to_records()[0].view().fields(),
        F.map(|f| std::str::from_utf8(f).unwrap())
    );
}

#[test]
fn invalid_utf8_is_tampering_at_its_row_and_keeps_the_rows_before() {
    let mut bad = F;
    bad[1] = b"\xff\x00";
    let (page, err) = build(&[(3, F), (4, bad)]);
    match err {
        Some(Error::Tampered(t)) => {
            assert_eq!(t.seq, 4);
            assert!(t.reason.contains("actor"), "{t}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(page.last_seq(), Some(3));
}

#[test]
fn a_character_split_between_two_fields_is_tampering_in_the_first() {
    // "é" is C3 A9: whole across the boundary, invalid in each field alone.
    let mut split = F;
    split[2] = b"x\xc3";
    split[3] = b"\xa9y";
    let (page, err) = build(&[(3, F), (4, split)]);
    match err {
        Some(Error::Tampered(t)) => {
            assert_eq!(
                (t.seq, t.reason.as_str()),
                (4, "subject is not valid UTF-8")
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(page.last_seq(), Some(3));
}

#[test]
fn invalid_text_in_a_later_row_keeps_every_row_before_it_intact() {
    let mut cut = F;
    cut[8] = b"{\"a\":\"\xe2\x82\"}";
    let mut last = F;
    last[5] = "rätt".as_bytes();
    let (page, err) = build(&[(1, last), (2, F), (3, cut), (4, F)]);
    match err {
        Some(Error::Tampered(t)) => assert_eq!(
            (t.seq, t.reason.as_str()),
            (3, "details is not valid UTF-8")
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(page.len(), 2);
    assert_eq!(page.get(0).unwrap().reason, "rätt");
    assert_eq!(page.get(1).unwrap().details, "{}");
}

#[test]
fn a_text_ending_inside_a_character_is_tampering() {
    let mut end = F;
    end[8] = b"\xf0\x9f\x98";
    let (page, err) = build(&[(5, F), (6, end)]);
    assert!(
        matches!(&err, Some(Error::Tampered(t)) if t.seq == 6 && t.reason == "details is not valid UTF-8"),
        "{err:?}"
    );
    assert_eq!(page.last_seq(), Some(5));
}

#[test]
fn bad_text_is_named_before_a_short_hash_in_the_same_row() {
    let mut b = PageBuilder::with_capacity(2);
    b.row(1, 0);
    for f in F {
        b.text(f).unwrap();
    }
    b.hashes(&[1; 32], &[2; 32]).unwrap();
    b.row(2, 0);
    let mut bad = F;
    bad[1] = b"\xff";
    for f in bad {
        b.text(f).unwrap();
    }
    assert!(b.hashes(&[1; 32], &[2; 31]).is_err());
    let (page, err) = b.finish();
    assert!(
        matches!(&err, Some(Error::Tampered(t)) if t.seq == 2 && t.reason == "actor is not valid UTF-8"),
        "{err:?}"
    );
    assert_eq!(page.last_seq(), Some(1));
    assert_eq!(page.get(0).unwrap().kind, "k");
}

#[test]
fn a_short_hash_is_tampering() {
    let mut b = PageBuilder::with_capacity(1);
    b.row(9, 0);
    for f in F {
        b.text(f).unwrap();
    }
    match b.hashes(&[0; 31], &[0; 32]) {
        Err(Error::Tampered(t)) => assert_eq!(
            (t.seq, t.reason.as_str()),
            (9, "prev_hash is 31 bytes, not 32")
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn recomputed_hashes_match_the_chain() {
    let rec = hash_chain::link(
        crate::event::Prepared {
            time_ns: 5,
            kind: "svid.issued".into(),
            actor: "a".into(),
            subject: "s".into(),
            action: "issue".into(),
            outcome: "success".into(),
            reason: String::new(),
            correlation_id: String::new(),
            node: "n".into(),
            details: "{}".into(),
        },
        0,
        hash_chain::GENESIS,
    );
    let mut b = PageBuilder::with_capacity(1);
    b.row(rec.seq, rec.time_ns);
    for f in rec.view().fields() {
        b.text(f.as_bytes()).unwrap();
    }
    b.hashes(&rec.prev_hash, &rec.hash).unwrap();
    let mut page = b.finish().0;
    assert_eq!(page.get(0).unwrap().recomputed, None);
    page.recompute_hashes();
    assert_eq!(page.get(0).unwrap().recomputed, Some(&rec.hash));
    assert_eq!(page.get(0).unwrap().to_record(), rec);
}

#[test]
fn rows_hashed_as_they_are_read_match_a_page_hashed_afterwards() {
    let mut rows = Vec::new();
    let mut prev = (0, hash_chain::GENESIS);
    for i in 0..5 {
        let p = crate::event::Prepared {
            time_ns: i,
            kind: "authz.decision".into(),
            actor: format!("spiffe://example.org/a{i}"),
            subject: "s".into(),
            action: "GET".into(),
            outcome: "success".into(),
            reason: String::new(),
            correlation_id: "c".repeat(i as usize),
            node: "n".into(),
            details: format!("{{\"i\":{i}}}"),
        };
        let r = hash_chain::link(p, prev.0, prev.1);
        prev = (r.seq, r.hash);
        rows.push(r);
    }
    let fill = |mut b: PageBuilder| {
        for r in &rows {
            b.row(r.seq, r.time_ns);
            for f in r.view().fields() {
                b.text(f.as_bytes()).unwrap();
            }
            b.hashes(&r.prev_hash, &r.hash).unwrap();
        }
        b.finish().0
    };
    let inline = fill(PageBuilder::with_capacity(2).hashing());
    let mut after = fill(PageBuilder::with_capacity(2));
    after.recompute_hashes();
    assert_eq!(inline.recomputed, after.recomputed);
    let stored: Vec<Hash> = rows.iter().map(|r| r.hash).collect();
    assert_eq!(inline.recomputed, stored);
}
