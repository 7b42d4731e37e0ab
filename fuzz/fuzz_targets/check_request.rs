//! Any bytes as an Envoy CheckRequest: decoding and building the policy input never panic,
//! with and without XFCC, however hostile the headers, body or metadata; and building only
//! what a policy reads refuses exactly the requests the whole input refuses.
#![no_main]

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use esm_authz::input::{build, build_projected, InputOptions};
use esm_authz::input_reads::InputReads;
use esm_authz::projection::Projection;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = CheckRequest::decode(data) {
        let whole = build(&req, &InputOptions { xfcc: false, ..Default::default() });
        let _ = build(&req, &InputOptions { xfcc: true, ..Default::default() });
        let reads = InputReads {
            paths: vec![
                vec!["source".into(), "spiffe_id".into()],
                vec!["attributes".into(), "request".into(), "http".into(), "method".into()],
            ],
            deterministic: true,
        };
        let projected = build_projected(&req, &InputOptions::default(), &Projection::of(&reads));
        assert_eq!(whole.is_ok(), projected.is_ok());
    }
});
