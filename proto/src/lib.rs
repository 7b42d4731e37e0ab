//! esm-proto: esm's own gRPC APIs. Today the SPIFFE Workload API (X.509 profile), which
//! SPIFFE libraries (go-spiffe, py-spiffe, spiffe-helper) call on the agent socket. Envoy's
//! APIs come from the `envoy-types` crate.

/// Generated from proto/workload.proto.
#[allow(
    clippy::all,
    clippy::pedantic,
    rust_2018_idioms,
    unused_qualifications,
    missing_docs
)]
pub mod workload {
    tonic::include_proto!("_");
}
