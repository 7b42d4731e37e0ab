//! Bounded accept loops for esm's network entry points (the ext_authz port and socket, the
//! admin endpoints and the admin socket). Any local user can connect to them; without
//! bounds, one could hold thousands of idle or half-spoken connections until esm runs out
//! of descriptors and memory, and with them the audit store and every workload's SDS.
//!
//! Each listener caps the connections it holds, in total and per peer (the owning uid on
//! a Unix socket or loopback TCP, the address otherwise), and closes a connection whose
//! first bytes do not arrive in time. What a request may do once it has started (its size,
//! how long it may take, how many streams a connection opens) is the server's to bound;
//! see the ext_authz and admin servers.

mod accept;
mod guarded;
mod limits;
mod metrics;
pub mod peer_uid;

pub use accept::{Accept, GuardedListener};
pub use guarded::Guarded;
pub use limits::{Full, Limits, Peer, Slots};
pub use metrics::{snapshots, Metrics, Snapshot};
