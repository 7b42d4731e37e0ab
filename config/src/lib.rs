//! `esm.toml`, parsed once into typed structs. Every key can be overridden by an
//! `ESM_<SECTION>_<KEY>` environment variable (`ESM_TRUST_DOMAIN`, `ESM_CA_SVID_MAX_TTL`,
//! `ESM_ADMIN_LISTEN`, …); the caller passes the variables in, so tests never touch the
//! process environment.
//!
//! A crate of its own so that the parser can be tested and fuzzed without the binary, and so
//! that each error says which file, which key and what was expected ([`Error`]).

mod audit;
mod bundle_server;
mod config;
mod env;
mod error;
mod files;
mod values;

pub mod agent;
pub mod authz;
pub mod authz_tls;
pub mod azure_key_vault;
pub mod key_backends;
pub mod reload;
pub mod telemetry;

pub use audit::AuditConfig;
pub use config::{default_toml, CaConfig, Config};
pub use error::Error;
pub use values::{duration, optional_addr};

pub type Result<T, E = Error> = std::result::Result<T, E>;
