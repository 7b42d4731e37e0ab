//! Any bytes as a policy bundle: the tar reader, the manifest, `.signatures.json` and the
//! data documents never panic and never read outside the archive. The first byte picks the
//! shape: the bytes as a `.tar.gz` as downloaded, or as a tar that this target compresses
//! (so that the fuzzer reaches the tar and JSON parsers, not only gzip's checks).
#![no_main]

use std::io::Write;
use std::path::Path;

use esm_authz::bundle::read_from;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let path = Path::new("fuzz.tar.gz");
    if shape & 1 == 0 {
        let _ = read_from(rest, path, None);
        return;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    if gz.write_all(rest).is_err() {
        return;
    }
    if let Ok(bytes) = gz.finish() {
        let _ = read_from(bytes.as_slice(), path, None);
    }
});
