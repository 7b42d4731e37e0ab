//! esm-identity: the names of the mesh.
//!
//! SPIFFE IDs and trust domains ([`spiffe_id`]), trust bundles ([`bundle`]) and the PEM text
//! they travel in ([`pem`]). The CA issues to these names, the agent serves them and the
//! ext_authz server reads them out of Envoy's requests: all three parse them here, the same
//! strict way, so an ID one of them accepts is never one another refuses.

pub mod bundle;
pub mod error;
pub mod pem;
pub mod spiffe_id;

pub use bundle::TrustBundle;
pub use error::{Error, Result};
pub use spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};
