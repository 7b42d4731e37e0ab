//! The gRPC server on loopback with hostile CheckRequests: each gets a decision in bounded
//! time and the server keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use esm_authz::check::CheckOptions;
use esm_authz::policy_set::{PolicySet, SourceFile};
use esm_authz::service::{serve, AuthzService, Metrics};
use tokio::sync::watch;

const POLICY: &str = r#"package envoy.authz
import rego.v1
default allow := false
allow if input.attributes.request.http.method == "GET"
"#;

async fn start() -> (String, watch::Sender<bool>, Arc<Metrics>) {
    let set = PolicySet::compile(
        vec![SourceFile {
            path: "p.rego".into(),
            text: POLICY.into(),
        }],
        "data.envoy.authz.allow",
    )
    .unwrap();
    let (_tx, rx) = watch::channel(Arc::new(set));
    std::mem::forget(_tx);
    let metrics = Arc::new(Metrics::default());
    let svc = AuthzService::new(rx, CheckOptions::default(), None, metrics.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(serve(listener, svc, async move {
        let _ = stop_rx.changed().await;
    }));
    (format!("http://{addr}"), stop_tx, metrics)
}

fn get(headers: Vec<(String, String)>, body: String) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                time: None,
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/".into(),
                    headers: headers.into_iter().collect(),
                    body,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

fn allowed(r: &envoy_types::pb::envoy::service::auth::v3::CheckResponse) -> bool {
    r.status.as_ref().unwrap().code == 0
}

#[tokio::test]
async fn hostile_requests_get_bounded_decisions_and_server_keeps_serving() {
    let (url, stop, metrics) = start().await;
    let mut c = AuthorizationClient::connect(url.clone())
        .await
        .unwrap()
        .max_encoding_message_size(64 << 20);

    let plain = c
        .check(get(vec![], String::new()))
        .await
        .unwrap()
        .into_inner();
    assert!(allowed(&plain));

    // 10,000 headers: denied (the policy cannot judge such a request), quickly.
    let t = Instant::now();
    let many = (0..10_000)
        .map(|i| (format!("h{i}"), "v".to_string()))
        .collect();
    let r = c
        .check(get(many, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert!(!allowed(&r));
    assert!(t.elapsed() < Duration::from_secs(5));

    // A 10 MiB JSON body: not parsed, still decided.
    let big = format!("{{\"a\":\"{}\"}}", "x".repeat(10 << 20));
    let mut req = get(
        vec![("content-type".into(), "application/json".into())],
        big,
    );
    let r = c.check(req.clone()).await.unwrap().into_inner();
    assert!(allowed(&r), "the policy does not read the body");

    // Deeply nested JSON: denied.
    req = get(
        vec![("content-type".into(), "application/json".into())],
        "[".repeat(100_000) + &"]".repeat(100_000),
    );
    assert!(!allowed(&c.check(req).await.unwrap().into_inner()));

    // Raw, non-UTF-8 header bytes (Envoy's encode_raw_headers): decided.
    let mut raw = get(vec![], String::new());
    raw.attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap()
        .header_map = Some(HeaderMap {
        headers: vec![HeaderValue {
            key: "x-bin".into(),
            raw_value: vec![0xff, 0xfe, 0x00],
            ..Default::default()
        }],
    });
    assert!(allowed(&c.check(raw).await.unwrap().into_inner()));

    // Garbage on the wire: the connection fails, the server does not.
    {
        use tokio::io::AsyncWriteExt;
        let addr = url.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0, 0, 1, 2, 3])
            .await
            .unwrap();
        drop(s);
    }
    let mut c2 = AuthorizationClient::connect(url).await.unwrap();
    assert!(allowed(
        &c2.check(get(vec![], String::new()))
            .await
            .unwrap()
            .into_inner()
    ));
    assert!(
        metrics
            .failed_closed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    stop.send(true).unwrap();
}
