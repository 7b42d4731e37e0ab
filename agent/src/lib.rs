//! esm-agent: the node agent inside `esm serve`.
//!
//! - Registration entries: [`entry`] (what a workload gets, by selectors), [`entry_store`]
//!   and [`entry_index`] (the served set, indexed on selectors).
//! - Workload attestation: [`attestation`] decides, [`peer_process`] gathers the facts.
//! - What is served: [`sds`] (Envoy SDS, on the wire through [`sds_server`]) and
//!   [`workload_api`] (the SPIFFE Workload API), both built from [`secrets`] and [`render`].
//!   The xDS protocol state is [`xds`] (pure); every stream waits in [`wake`].
//! - SVIDs: held once per identity in [`svid_cache`] (followed per stream through
//!   [`subscriptions`]) and renewed as [`svid_refresh`] says.
//! - Transports: [`unix`] (the agent socket, relayed through [`h2_authority`] and bounded by
//!   [`connection_limits`]) and [`mtls`] (mutual TLS over TCP, accepted in [`mtls_accept`],
//!   its peers in [`mtls_peers`]; also what the ext_authz port uses when `authz.tls` is on),
//!   wired in [`server`].
//!
//! The CA material (signing CA and trust bundle) comes from esm-ca on one watch channel
//! ([`context::AgentContext::ca`]); every open stream follows it.

pub mod attestation;
pub mod connection_limits;
pub mod context;
pub mod entry;
pub mod entry_import;
pub mod entry_index;
pub mod entry_store;
pub mod error;
pub mod h2_authority;
pub mod hpack_check;
pub mod mtls;
pub mod mtls_accept;
pub mod mtls_peers;
pub mod peer_process;
pub mod render;
pub mod sds;
pub mod sds_server;
pub mod secrets;
pub mod server;
pub mod stream_limits;
pub mod subscriptions;
pub mod svid_cache;
pub mod svid_refresh;
pub mod unix;
pub mod wake;
pub mod workload_api;
pub mod xds;

pub use error::{Error, Result};
