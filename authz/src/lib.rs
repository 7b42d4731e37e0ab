//! esm-authz: the Envoy `ext_authz` server and its Rego policy engine.
//!
//! A CheckRequest becomes the same input document OPA-Envoy builds ([`input`], [`parsed`]);
//! a compiled policy set ([`policy_set`]) evaluates it; the result maps onto Envoy's
//! response exactly as OPA-Envoy maps it ([`decision`], [`response`]). [`check`] is the pure
//! function in the middle; [`service`] is the thin gRPC layer around it; [`reload`] swaps
//! policy sets atomically when the policy directory changes.

pub mod bundle;
mod bundle_download;
mod bundle_json;
pub mod bundle_service;
mod bytecode_check;
mod bytecode_sources;
mod bytecode_uses;
pub mod change_author;
pub mod check;
pub mod decision;
pub mod decision_memo;
pub mod decision_record;
pub mod engine;
pub mod error;
pub mod grpc_body;
pub mod input;
pub mod input_reads;
mod input_shape;
pub mod jwt;
pub mod jwt_builtins;
pub mod jwt_key_cache;
mod jwt_keys;
mod jwt_pem;
pub mod jwt_sign;
pub mod memo_key;
pub mod multipart;
pub mod parsed;
mod policy_files;
pub mod policy_set;
pub mod projection;
pub mod rego_compat;
pub mod reload;
pub mod reload_counts;
pub mod response;
pub mod service;
mod service_metrics;
pub mod source;
pub mod trace_context;
mod view;
pub mod xfcc;

pub use error::{Error, Result};

#[cfg(test)]
#[path = "memo_agrees_tests.rs"]
mod memo_agrees_tests;
