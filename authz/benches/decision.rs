//! In-process decision time for the default zero-trust policy: CheckRequest → input →
//! evaluation → Envoy response, answered by the decision memo, missing it, and with no memo
//! at all, next to building the input alone in the same run.
//!
//! `cargo bench -p esm-authz --bench decision`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

/// The allocator the `esm` binary uses, so the figures are the binary's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, Address, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use esm_authz::check::{check, CheckOptions};
use esm_authz::input::{build, build_projected, InputOptions};
use esm_authz::policy_set::PolicySet;

fn peer(principal: &str, port: u32) -> Peer {
    Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "10.0.0.1".into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        principal: principal.into(),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default");
    let set = PolicySet::load(&dir, "data.envoy.authz.allow").unwrap();
    let headers = [
        (":authority", "api.local"),
        ("user-agent", "curl/8.0"),
        ("accept", "*/*"),
        ("x-request-id", "6f2c1a9e-1d7b-4a4e-9f5e-0c1d2e3f4a5b"),
        ("x-forwarded-proto", "https"),
    ];
    let req = CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer("spiffe://example.org/ns/prod/sa/web", 51000)),
            destination: Some(peer("spiffe://example.org/ns/prod/sa/api", 8443)),
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/items/7?full=1".into(),
                    host: "api.local".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    };
    let opts = CheckOptions::default();
    assert!(check(&set, &req, &opts).decision.allowed);
    let fresh = PolicySet::load(&dir, "data.envoy.authz.allow")
        .unwrap()
        .with_memo_capacity(0);
    let mut g = c.benchmark_group("authz_decision");
    g.bench_function("input_build_only", |b| {
        b.iter(|| build(&req, InputOptions::default()).unwrap())
    });
    // Only what the default policy reads (identities, method, path).
    g.bench_function("input_build_projected", |b| {
        b.iter(|| build_projected(&req, InputOptions::default(), set.projection()).unwrap())
    });
    // The same workloads and route every time: the memo answers.
    g.bench_function("default_policy_check", |b| {
        b.iter(|| check(&set, &req, &opts))
    });
    // A new path every time: the memo misses, evaluates and stores (the worst case).
    let mut unique = req.clone();
    let mut n = 0u64;
    g.bench_function("default_policy_check_memo_miss", |b| {
        b.iter(|| {
            n += 1;
            if let Some(h) = unique
                .attributes
                .as_mut()
                .and_then(|a| a.request.as_mut())
                .and_then(|r| r.http.as_mut())
            {
                h.path = format!("/items/{n}");
            }
            check(&set, &unique, &opts)
        })
    });
    // No memo at all: the interpreter on every request.
    g.bench_function("default_policy_check_no_memo", |b| {
        b.iter(|| check(&fresh, &req, &opts))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
