//! The request the decision benchmarks and `examples/decision_cost.rs` decide: a GET between
//! two workloads of the default policy's grants, with the headers Envoy forwards.

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, Address, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

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

/// `web` calling `GET /items/7?full=1` on `api`: granted by the default policy.
pub fn granted() -> CheckRequest {
    let headers = [
        (":authority", "api.local"),
        ("user-agent", "curl/8.0"),
        ("accept", "*/*"),
        ("x-request-id", "6f2c1a9e-1d7b-4a4e-9f5e-0c1d2e3f4a5b"),
        ("x-forwarded-proto", "https"),
    ];
    CheckRequest {
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
    }
}

/// Gives `req` the path `/items/{n}`: a request the memo has not seen.
pub fn set_path(req: &mut CheckRequest, n: u64) {
    if let Some(h) = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        h.path.clear();
        use std::fmt::Write;
        let _ = write!(h.path, "/items/{n}");
    }
}
