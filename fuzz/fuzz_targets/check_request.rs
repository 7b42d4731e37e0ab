//! Any bytes as an Envoy CheckRequest: decoding and building the policy input never panic,
//! with and without XFCC, however hostile the headers, body or metadata.
#![no_main]

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use esm_authz::input::{build, InputOptions};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = CheckRequest::decode(data) {
        let _ = build(&req, InputOptions { xfcc: false });
        let _ = build(&req, InputOptions { xfcc: true });
    }
});
