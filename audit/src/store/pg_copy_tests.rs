#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Binary COPY data of `rows` events as PostgreSQL writes it.
fn copy_data(rows: u64) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    for seq in 1..=rows {
        out.extend_from_slice(&FIELDS.to_be_bytes());
        field(&mut out, &(seq as i64).to_be_bytes());
        field(&mut out, &(seq as i64 * 1000).to_be_bytes());
        for t in [
            "authz.decision",
            "spiffe://td/a",
            "spiffe://td/b",
            "GET",
            "allow",
        ] {
            field(&mut out, t.as_bytes());
        }
        field(&mut out, b"");
        field(&mut out, format!("req-{seq}").as_bytes());
        field(&mut out, "nœud".as_bytes());
        field(&mut out, br#"{"path":"/x"}"#);
        field(&mut out, &[seq as u8; 32]);
        field(&mut out, &[seq as u8 + 1; 32]);
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

fn parse_in_chunks(data: &[u8], chunk: usize) -> (Page, Option<Error>) {
    let mut p = CopyParser::new(4);
    for c in data.chunks(chunk) {
        if let Err(e) = p.feed(c) {
            return p.finish_partial(e);
        }
    }
    p.finish()
}

#[test]
fn rows_read_the_same_whatever_the_chunks_they_arrive_in() {
    let data = copy_data(3);
    let (whole, err) = parse_in_chunks(&data, data.len());
    assert!(err.is_none(), "{err:?}");
    assert_eq!(whole.len(), 3);
    let r = whole.get(1).unwrap();
    assert_eq!((r.seq, r.time_ns), (2, 2000));
    assert_eq!(r.kind, "authz.decision");
    assert_eq!(r.reason, "");
    assert_eq!(r.correlation_id, "req-2");
    assert_eq!(r.node, "nœud");
    assert_eq!(r.details, r#"{"path":"/x"}"#);
    assert_eq!(r.prev_hash, &[2u8; 32]);
    assert_eq!(r.hash, &[3u8; 32]);
    for chunk in 1..=64 {
        let (p, err) = parse_in_chunks(&data, chunk);
        assert!(err.is_none(), "chunks of {chunk}: {err:?}");
        assert_eq!(p.to_records(), whole.to_records(), "chunks of {chunk}");
    }
}

#[test]
fn an_empty_range_is_a_header_and_the_end_marker() {
    let (p, err) = parse_in_chunks(&copy_data(0), 5);
    assert!(err.is_none(), "{err:?}");
    assert!(p.is_empty());
}

#[test]
fn malformed_copy_data_is_the_databases_fault_with_the_rows_before_it() {
    let good = copy_data(2);
    let header = 19;
    let row = (good.len() - header - 2) / 2;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"PGCOPY\n\xff\r\n\x01rest".to_vec(), "not binary COPY data"),
        (Vec::new(), "no data"),
        (good[..good.len() - 2].to_vec(), "before its end marker"),
        (good[..header + row + 7].to_vec(), "ended inside a row"),
        ([&good[..], b"x"].concat(), "after the end marker"),
        (
            {
                let mut d = good.clone();
                d[header + row..header + row + 2].copy_from_slice(&12i16.to_be_bytes());
                d
            },
            "a row of 12 fields",
        ),
        (
            {
                let mut d = good.clone();
                d[header + row + 2..header + row + 6].copy_from_slice(&(-1i32).to_be_bytes());
                d
            },
            "column seq is NULL",
        ),
        (
            {
                let mut d = good.clone();
                // A length far past the data: waits for more, then ends inside a row.
                d[header + row + 2..header + row + 6].copy_from_slice(&i32::MAX.to_be_bytes());
                d
            },
            "ended inside a row",
        ),
        (
            {
                let mut d = copy_data(1);
                d.truncate(header);
                d.extend_from_slice(&FIELDS.to_be_bytes());
                field(&mut d, &[1, 2, 3]);
                for _ in 1..FIELDS {
                    field(&mut d, &[0; 8]);
                }
                d.extend_from_slice(&(-1i16).to_be_bytes());
                d
            },
            "seq is not a bigint",
        ),
    ];
    for (data, want) in cases {
        let (page, err) = parse_in_chunks(&data, 7);
        let err = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(want), "{want}: {err}");
        // Only whole rows before the fault are kept.
        assert!(page.len() <= 2, "{want}");
        if want == "before its end marker" {
            assert_eq!(page.len(), 2);
        }
    }
    let mut bad_utf8 = copy_data(1);
    let at = bad_utf8.windows(5).position(|w| w == b"allow").unwrap();
    bad_utf8[at] = 0xff;
    let (page, err) = parse_in_chunks(&bad_utf8, 3);
    assert!(page.is_empty());
    let err = err.unwrap().to_string();
    assert!(err.contains("outcome is not valid UTF-8"), "{err}");
}
