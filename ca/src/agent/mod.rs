//! The node agent inside `esm serve`: registration entries and their store, workload
//! attestation on the agent socket, and the SDS server that hands workloads their SVIDs and
//! the trust bundle and pushes every rotation.

pub mod attestation;
pub mod connection_limits;
pub mod context;
pub mod entry;
pub mod entry_store;
pub mod h2_authority;
pub mod hpack_check;
pub mod peer_process;
pub mod render;
pub mod sds;
pub mod secrets;
pub mod server;
pub mod svid_set;
pub mod tcp;
pub mod unix;
pub mod workload_api;
