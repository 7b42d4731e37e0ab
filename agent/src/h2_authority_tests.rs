#![allow(clippy::unwrap_used, clippy::expect_used)]

use fluke_hpack::{Decoder, Encoder};

use super::*;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame_header(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

/// The frames in `bytes` after the preface: (kind, flags, stream, payload).
fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut b = &bytes[PREFACE.len()..];
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
        let stream = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
        out.push((b[3], b[4], stream, b[9..9 + len].to_vec()));
        b = &b[9 + len..];
    }
    out
}

fn request(enc: &mut Encoder<'_>, authority: &[u8]) -> Vec<u8> {
    enc.encode([
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
        (b":authority", authority),
        (b"workload.spiffe.io", b"true"),
    ])
}

fn decoded(block: &[u8]) -> Vec<(String, String)> {
    Decoder::new()
        .decode(block)
        .unwrap()
        .into_iter()
        .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
        .collect()
}

#[test]
fn replaces_a_percent_encoded_socket_path_authority_and_keeps_the_rest() {
    let mut enc = Encoder::new();
    let mut input = PREFACE.to_vec();
    input.extend(frame(0x4, 0, 0, &[])); // SETTINGS passes through
    input.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &request(&mut enc, b"tmp%2Fesm%2Fagent.sock"),
    ));
    input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0"));
    // The same request again: the client now refers to its dynamic table.
    input.extend(frame(
        HEADERS,
        END_HEADERS,
        3,
        &request(&mut enc, b"tmp%2Fesm%2Fagent.sock"),
    ));
    let mut out = Vec::new();
    let mut r = Rewriter::default();
    // Byte by byte: frames split anywhere are reassembled.
    for b in &input {
        r.feed(std::slice::from_ref(b), &mut out).unwrap();
    }
    let f = frames(&out);
    assert_eq!(f.len(), 4);
    assert_eq!((f[0].0, f[2].0, f[2].1), (0x4, 0x0, END_STREAM));
    for h in [&f[1], &f[3]] {
        assert_eq!(h.0, HEADERS);
        let headers = decoded(&h.3);
        assert!(headers.contains(&(":authority".into(), "localhost".into())));
        assert!(headers.contains(&(":path".into(), "/SpiffeWorkloadAPI/FetchX509SVID".into())));
        assert!(headers.contains(&("workload.spiffe.io".into(), "true".into())));
    }
}

#[test]
fn keeps_a_valid_authority_and_joins_continuations_and_strips_padding() {
    let block = request(&mut Encoder::new(), b"localhost:9000");
    let (a, b) = block.split_at(block.len() / 2);
    let mut padded = vec![3u8];
    padded.extend_from_slice(a);
    padded.extend_from_slice(&[0, 0, 0]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, PADDED | END_STREAM, 5, &padded));
    input.extend(frame(CONTINUATION, END_HEADERS, 5, b));
    let mut out = Vec::new();
    Rewriter::default().feed(&input, &mut out).unwrap();
    let f = frames(&out);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].1, END_STREAM | END_HEADERS);
    assert!(decoded(&f[0].3).contains(&(":authority".into(), "localhost:9000".into())));
}

#[test]
fn refuses_broken_streams() {
    let cases: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        [PREFACE, &frame(CONTINUATION, END_HEADERS, 1, b"x")].concat(),
        [
            PREFACE,
            &frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff]),
        ]
        .concat(),
        [PREFACE, &frame(HEADERS, PADDED | END_HEADERS, 1, &[9])].concat(),
        [
            PREFACE,
            &frame(HEADERS, 0, 1, &[0x82]),
            &frame(0x0, 0, 1, b"data"),
        ]
        .concat(),
    ];
    for c in cases {
        let mut out = Vec::new();
        assert!(Rewriter::default().feed(&c, &mut out).is_err(), "{c:?}");
    }
}

fn int(flags: u8, prefix: u8, value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    encode_integer_into(value, prefix, flags, &mut out).unwrap();
    out
}

/// A literal with incremental indexing (new name): the header goes into the table.
fn indexed_literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = int(0x40, 6, 0);
    out.extend(int(0, 7, name.len()));
    out.extend_from_slice(name);
    out.extend(int(0, 7, value.len()));
    out.extend_from_slice(value);
    out
}

/// `block` as HEADERS and CONTINUATION frames of at most MAX_FRAME bytes on `stream`.
fn header_frames(stream: u32, block: &[u8]) -> Vec<u8> {
    let chunks: Vec<&[u8]> = block.chunks(MAX_FRAME).collect();
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let kind = if i == 0 { HEADERS } else { CONTINUATION };
        let flags = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        out.extend(frame(kind, flags, stream, c));
    }
    out
}

/// Index 62: the newest entry of the dynamic table.
const NEWEST: u8 = 0x80 | 62;

#[test]
fn refuses_table_references_that_decode_past_the_header_list_limit_without_writing_them() {
    // 4,000 bytes in the table (within its 4,096), then 5,000 one-byte references to it:
    // a 9 KB block that decodes to 20 MB.
    let mut block = indexed_literal(b"x-bomb", &[b'a'; 4_000]);
    block.extend(std::iter::repeat_n(NEWEST, 5_000));
    let input = [PREFACE, &frame(0x4, 0, 0, &[]), &header_frames(1, &block)].concat();
    let mut out = Vec::new();
    let mut r = Rewriter::default();
    let err = r.feed(&input, &mut out).unwrap_err();
    assert!(err.0.contains("header list"), "{err:?}");
    // Only the preface and SETTINGS were relayed; the re-encoding stopped at the limit.
    assert_eq!(out.len(), PREFACE.len() + 9);
    assert!(r.scratch.len() <= MAX_HEADER_LIST, "{}", r.scratch.len());
    assert!(r.scratch.capacity() <= 2 * MAX_HEADER_LIST);
}

#[test]
fn refuses_a_table_size_update_above_the_advertised_size_and_takes_one_within_it() {
    let over = [
        int(0x20, 5, MAX_TABLE + 1),
        indexed_literal(b"x-big", &[b'a'; 100]),
    ]
    .concat();
    let mut out = Vec::new();
    let input = [PREFACE, &header_frames(1, &over)].concat();
    let err = Rewriter::default().feed(&input, &mut out).unwrap_err();
    assert!(err.0.contains("table size update"), "{err:?}");

    let mut within = int(0x20, 5, MAX_TABLE);
    within.extend(request(&mut Encoder::new(), b"tmp%2Fagent.sock"));
    let mut out = Vec::new();
    let input = [PREFACE, &header_frames(1, &within)].concat();
    Rewriter::default().feed(&input, &mut out).unwrap();
    assert!(decoded(&frames(&out)[0].3).contains(&(":authority".into(), "localhost".into())));
}

#[test]
fn refuses_hpack_the_decoder_would_panic_on_or_that_breaks_size_update_rules() {
    let cases: [&[u8]; 3] = [
        &[0x3f],                   // size update whose integer is cut short
        &[0x3f, 0xff, 0xff, 0xff], // the same, longer
        &[0x82, 0x20, 0x82],       // size update after a field
    ];
    for block in cases {
        let input = [PREFACE, &header_frames(1, block)].concat();
        assert!(
            Rewriter::default().feed(&input, &mut Vec::new()).is_err(),
            "{block:?}"
        );
    }
}

#[test]
fn refuses_a_frame_over_the_max_frame_size_from_its_header_alone() {
    let mut header = Vec::new();
    frame_header(&mut header, (1 << 24) - 1, 0x0, 0, 1);
    let input = [PREFACE, &header].concat();
    let mut r = Rewriter::default();
    assert!(r.feed(&input, &mut Vec::new()).is_err());
    // Exactly MAX_FRAME is allowed.
    let input = [PREFACE, &frame(0x0, 0, 1, &[0; MAX_FRAME])].concat();
    Rewriter::default().feed(&input, &mut Vec::new()).unwrap();
}

#[test]
fn refuses_a_header_block_over_its_limit_across_continuations() {
    // Literal header values without indexing, never decoded: only the block's size counts.
    let mut block = Vec::new();
    while block.len() <= MAX_BLOCK {
        block.extend([0x00, 0x01, b'x']);
        block.extend(int(0, 7, 1_000));
        block.extend([b'v'; 1_000]);
    }
    let input = [PREFACE, &header_frames(1, &block)].concat();
    let err = Rewriter::default()
        .feed(&input, &mut Vec::new())
        .unwrap_err();
    assert!(err.0.contains("header block over"), "{err:?}");
}

#[test]
fn stops_at_its_output_budget_and_goes_on_when_fed_nothing() {
    // Each 4-byte block after the first decodes to 3 references of a 4,000-byte header.
    let mut input = [
        PREFACE,
        &header_frames(1, &indexed_literal(b"x-big", &[b'a'; 4_000])),
    ]
    .concat();
    for stream in (3..).step_by(2).take(50) {
        input.extend(header_frames(stream, &[0x82, NEWEST, NEWEST, NEWEST]));
    }
    let mut r = Rewriter::default();
    let mut out = Vec::new();
    r.feed(&input, &mut out).unwrap();
    assert!(out.len() < OUT_BUDGET + MAX_HEADER_LIST, "{}", out.len());
    let mut blocks = frames(&out).len();
    while r.backlog() {
        out.clear();
        out.extend_from_slice(PREFACE); // so `frames` can skip it
        r.feed(&[], &mut out).unwrap();
        assert!(out.len() < PREFACE.len() + OUT_BUDGET + MAX_HEADER_LIST);
        blocks += frames(&out).len();
    }
    assert_eq!(blocks, 51);
    assert!(r.at_rest());
}

#[test]
fn owes_bytes_until_its_first_frame_and_while_a_frame_or_block_is_open() {
    let mut r = Rewriter::default();
    let mut out = Vec::new();
    r.feed(PREFACE, &mut out).unwrap();
    assert!(!r.at_rest(), "the first frame is still owed");
    r.feed(&frame(0x4, 0, 0, &[]), &mut out).unwrap();
    assert!(r.at_rest());
    r.feed(&frame(0x0, 0, 1, b"data")[..5], &mut out).unwrap();
    assert!(!r.at_rest(), "half a frame");
    r.feed(&frame(0x0, 0, 1, b"data")[5..], &mut out).unwrap();
    assert!(r.at_rest());
    r.feed(&frame(HEADERS, 0, 3, &[0x82]), &mut out).unwrap();
    assert!(!r.at_rest(), "a header block without END_HEADERS");
    r.feed(&frame(CONTINUATION, END_HEADERS, 3, &[0x84]), &mut out)
        .unwrap();
    assert!(r.at_rest());
}
