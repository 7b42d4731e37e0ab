//! esm-ca: the SPIFFE workload CA.
//!
//! SPIFFE IDs ([`spiffe_id`]), key backends ([`key_backend`]), the CA's own certificates
//! ([`authority`]) and their rotation ([`rotation`], [`store`]), X509-SVID issuance
//! ([`issuer`], [`csr`]) and trust bundles ([`bundle`]).

pub mod agent;
pub mod authority;
pub mod bundle;
pub mod csr;
pub mod error;
pub mod evidence;
pub mod issuer;
pub mod key_backend;
pub mod pem;
pub mod rotation;
pub mod rotator;
pub mod spiffe_id;
pub mod state;
pub mod store;

pub use error::{Error, Result};
pub use spiffe_id::{SpiffeId, TrustDomain};

/// RFC 3339 in UTC, whole seconds: the one way esm writes an instant for people.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
