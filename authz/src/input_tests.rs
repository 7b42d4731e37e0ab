#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::error::Error;
use envoy_types::pb::envoy::config::core::v3::{socket_address::PortSpecifier, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::Request;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use serde_json::json;

pub fn peer_at(ip: &str, port: u32, principal: &str) -> Peer {
    Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        principal: principal.into(),
        ..Default::default()
    }
}

pub fn http_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer_at("10.0.0.1", 51000, "spiffe://example.org/web")),
            destination: Some(peer_at("10.0.0.2", 8080, "spiffe://example.org/api")),
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    id: "42".into(),
                    method: method.into(),
                    path: path.into(),
                    host: "api.local".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    body: body.into(),
                    size: body.len() as i64,
                    ..Default::default()
                }),
            }),
            context_extensions: [("site".to_string(), "plant-7".to_string())].into(),
            ..Default::default()
        }),
    }
}

fn to_json(v: &Value) -> serde_json::Value {
    serde_json::from_str(&v.to_json_str().unwrap()).unwrap()
}

#[test]
fn builds_the_opa_envoy_input_shape() {
    let req = http_request(
        "POST",
        "/items/a%20b?x=1&x=2",
        &[("content-type", "application/json"), (":path", "/items")],
        r#"{"n":1}"#,
    );
    let v = to_json(&build(&req, &InputOptions::default()).unwrap());
    assert_eq!(
        v["attributes"]["source"]["address"]["socketAddress"],
        json!({"address": "10.0.0.1", "portValue": 51000})
    );
    assert_eq!(
        v["attributes"]["source"]["principal"],
        "spiffe://example.org/web"
    );
    let http = &v["attributes"]["request"]["http"];
    assert_eq!(http["method"], "POST");
    assert_eq!(http["headers"]["content-type"], "application/json");
    assert_eq!(http["size"], "7");
    assert!(http.get("rawBody").is_none() && http.get("query").is_none());
    assert_eq!(
        v["attributes"]["contextExtensions"],
        json!({"site": "plant-7"})
    );
    assert_eq!(v["parsed_path"], json!(["items", "a b"]));
    assert_eq!(v["parsed_query"], json!({"x": ["1", "2"]}));
    assert_eq!(v["parsed_body"], json!({"n": 1}));
    assert_eq!(v["truncated_body"], false);
    assert_eq!(
        v["version"],
        json!({"ext_authz": "v3", "encoding": "protojson"})
    );
    assert_eq!(v["source"]["spiffe_id"], "spiffe://example.org/web");
    assert_eq!(v["destination"]["spiffe_id"], "spiffe://example.org/api");
}

#[test]
fn network_filter_request_has_no_http_part() {
    let mut req = http_request("GET", "/", &[], "");
    req.attributes.as_mut().unwrap().request = None;
    let v = to_json(&build(&req, &InputOptions::default()).unwrap());
    assert!(v["attributes"].get("request").is_none());
    assert_eq!(v["parsed_path"], json!([""]));
    assert_eq!(v["source"]["spiffe_id"], "spiffe://example.org/web");
}

#[test]
fn spiffe_id_from_xfcc_only_when_configured() {
    let mut req = http_request(
        "GET",
        "/",
        &[(
            "x-forwarded-client-cert",
            "URI=spiffe://x/y,By=spiffe://example.org/gw;Hash=ab;URI=spiffe://example.org/client",
        )],
        "",
    );
    req.attributes
        .as_mut()
        .unwrap()
        .source
        .as_mut()
        .unwrap()
        .principal = String::new();
    let v = to_json(&build(&req, &InputOptions::default()).unwrap());
    assert!(v["source"].get("spiffe_id").is_none());
    let v = to_json(
        &build(
            &req,
            &InputOptions {
                xfcc: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    assert_eq!(v["source"]["spiffe_id"], "spiffe://example.org/client");
}

#[test]
fn principal_that_is_not_a_spiffe_id_gives_none() {
    assert_eq!(spiffe_id_of("CN=web"), None);
    assert_eq!(spiffe_id_of("spiffe://"), None);
    assert_eq!(spiffe_id_of("spiffe://a b/x"), None);
    // What esm-identity refuses, authz does not take for a SPIFFE ID either.
    assert_eq!(spiffe_id_of("spiffe://Example.org/x"), None);
    assert_eq!(spiffe_id_of("spiffe://td/a/../b"), None);
    assert_eq!(spiffe_id_of("spiffe://td/x?q=1"), None);
    assert_eq!(spiffe_id_of("spiffe://td:443/x"), None);
    assert_eq!(spiffe_id_of("spiffe://td/x"), Some("spiffe://td/x"));
}

#[test]
fn too_many_headers_is_refused() {
    let names: Vec<String> = (0..MAX_HEADERS + 1).map(|i| format!("h{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let req = http_request("GET", "/", &headers, "");
    assert!(matches!(
        build(&req, &InputOptions::default()),
        Err(Error::Request(_))
    ));
}

#[test]
fn raw_header_bytes_are_decoded_lossily() {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let mut req = http_request("GET", "/", &[], "");
    let http = req
        .attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap();
    http.header_map = Some(HeaderMap {
        headers: vec![
            HeaderValue {
                key: "X-Bin".into(),
                raw_value: vec![0x66, 0xff, 0x6f],
                ..Default::default()
            },
            HeaderValue {
                key: "x-bin".into(),
                raw_value: b"two".to_vec(),
                ..Default::default()
            },
        ],
    });
    let v = to_json(&build(&req, &InputOptions::default()).unwrap());
    assert_eq!(
        v["attributes"]["request"]["http"]["headers"]["x-bin"],
        "f\u{fffd}o,two"
    );
}

#[test]
fn empty_check_request_builds() {
    let v = to_json(&build(&CheckRequest::default(), &InputOptions::default()).unwrap());
    assert_eq!(v["parsed_path"], json!([""]));
    assert_eq!(v["truncated_body"], false);
}
