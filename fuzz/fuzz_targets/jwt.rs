//! Any string as a bearer token and as a key document: decoding, key parsing and
//! verification return results, never panic.
#![no_main]

use esm_authz::jwt::{decode, parse_keys, verify_any};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    // Split near the middle, on a character boundary (the middle byte may be inside one).
    let mut mid = s.len() / 2;
    while !s.is_char_boundary(mid) {
        mid -= 1;
    }
    let (token, key) = s.split_at(mid);
    let keys = parse_keys(key).unwrap_or_default();
    if let Ok(t) = decode(token) {
        let alg = t.alg().to_owned();
        let _ = verify_any(&t, &alg, &keys);
    }
});
