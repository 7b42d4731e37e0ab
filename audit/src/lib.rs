//! esm-audit: the evidence every other part of esm writes to.
//!
//! Events ([`event`]) are chained by hash ([`hash_chain`]) and covered by signed RFC 6962
//! Merkle checkpoints ([`merkle`], [`checkpoint`]) signed by a key that may live in a file, an
//! HSM or a vault ([`signer`]); a single writer ([`writer`]) commits them
//! in batches to SQLite or PostgreSQL ([`store`]), where triggers refuse UPDATE and DELETE;
//! [`verify`] recomputes everything and names the first bad sequence number. Removing old
//! events ([`retention`]) is itself a signed event in the log.

pub mod background;
pub mod checkpoint;
pub mod checkpointer;
pub mod details;
pub mod durable_file;
pub mod error;
pub mod event;
pub mod export;
pub mod file_key;
pub mod hash_chain;
pub mod key_dir;
pub mod merkle;
pub mod prove;
pub mod public_key;
pub mod redact;
pub mod retention;
pub mod retry;
pub mod signer;
pub mod sink;
pub mod store;
pub mod verify;
pub mod writer;
mod writer_chain;
mod writer_metrics;
mod writer_options;

pub use error::{Error, Result, Tampered};
pub use event::{kind, Details, Event, FlatObject, Outcome};
