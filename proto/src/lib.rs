//! esm-proto: esm's own gRPC APIs (admin API, SPIFFE Workload API).
//!
//! Empty until the SDS issue lands; Envoy's APIs come from the `envoy-types` crate.
