//! Any string: parsing never panics, and what parses prints back to itself (IDs are
//! compared byte for byte across the mesh, so parse ∘ print must be the identity).
#![no_main]

use esm_identity::SpiffeId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(id) = SpiffeId::parse(s) {
        assert_eq!(id.as_str(), s);
        assert_eq!(SpiffeId::parse(id.as_str()).ok(), Some(id));
    }
});
