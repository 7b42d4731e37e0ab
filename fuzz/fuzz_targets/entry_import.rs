//! Any bytes as an `esm entry import` file: cut into lines in fuzzer-chosen chunks, each line
//! parsed, and the parsed lines planned against an empty store. None may panic; a refusal
//! names its line. The chunk size comes from the first byte, so line cutting across chunk
//! boundaries (and the per-line and total limits) is exercised too.
#![no_main]

use esm_agent::entry_import::{parse_line, plan, Lines};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let mut lines = Lines::with_limit(1 << 20);
    let mut parsed = Vec::new();
    for piece in rest.chunks(usize::from(chunk).max(1)) {
        let Ok(done) = lines.push(piece) else {
            return;
        };
        for (n, raw) in done {
            match parse_line(n, &raw) {
                Ok(Some(entry)) => parsed.push((n, entry)),
                Ok(None) => {}
                Err(_) => return,
            }
        }
    }
    if let Some((n, raw)) = lines.finish() {
        match parse_line(n, &raw) {
            Ok(Some(entry)) => parsed.push((n, entry)),
            Ok(None) => {}
            Err(_) => return,
        }
    }
    let mut next = 0u64;
    let _ = plan(&[], parsed, "2026-01-01T00:00:00Z", || {
        next += 1;
        Ok(format!("id-{next}"))
    });
});
