//! esm-ca: the SPIFFE workload CA.
//!
//! Key backends ([`key_backend`]), the CA's own certificates ([`authority`]) and their
//! rotation ([`rotation`], [`rotator`], [`store`]), X509-SVID issuance ([`issuer`], [`csr`]).
//! The names it issues to (SPIFFE IDs, trust bundles) are esm-identity's.

pub mod audit_events;
pub mod authority;
pub mod csr;
pub mod error;
pub mod issuer;
pub mod key_backend;
pub mod material;
pub mod rotation;
pub mod rotator;
pub mod state;
pub mod store;

pub use error::{Error, Result};

/// RFC 3339 in UTC, whole seconds: the one way esm writes an instant for people.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
