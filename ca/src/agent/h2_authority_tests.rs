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
