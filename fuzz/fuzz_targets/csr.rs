//! Any bytes as a CSR (PEM or DER): validation returns a result, never panics.
#![no_main]

use esm_identity::SpiffeId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(id) = SpiffeId::parse("spiffe://example.org/fuzz") else {
        return;
    };
    let _ = esm_ca::csr::validate(data, &id);
});
