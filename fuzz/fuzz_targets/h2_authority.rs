//! Any bytes from an agent-socket client: the HTTP/2 :authority rewriter returns bytes or an
//! error, never panics, however the stream is split.
#![no_main]

use esm_agent::h2_authority::Rewriter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    input.extend_from_slice(data);
    let mut r = Rewriter::default();
    let mut out = Vec::new();
    for chunk in input.chunks(7) {
        if r.feed(chunk, &mut out).is_err() {
            return;
        }
    }
});
