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
use esm_authz::service::{serve, serve_unix, AuthzService, Metrics, ServedSet};
use tokio::sync::watch;

const POLICY: &str = r#"package envoy.authz
import rego.v1
default allow := false
allow if input.attributes.request.http.method == "GET"
"#;

/// A served set compiled from one policy text; the sender is leaked so it never closes.
fn served(name: &str, policy: &str, dry_run: bool) -> ServedSet {
    let set = PolicySet::compile(
        vec![SourceFile {
            path: "p.rego".into(),
            text: policy.into(),
        }],
        "data.envoy.authz.allow",
    )
    .unwrap();
    let (tx, rx) = watch::channel(Arc::new(set));
    std::mem::forget(tx);
    ServedSet {
        name: name.into(),
        dry_run,
        policies: rx,
    }
}

const DENY_ALL: &str = "package envoy.authz\nimport rego.v1\ndefault allow := false\n";

fn service(metrics: &Arc<Metrics>) -> AuthzService {
    AuthzService::new(
        vec![
            served("default", POLICY, false),
            served("canary", DENY_ALL, true),
            served("strict", DENY_ALL, false),
        ],
        CheckOptions::default(),
        None,
        metrics.clone(),
    )
}

async fn start() -> (String, watch::Sender<bool>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let svc = service(&metrics);
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

fn http_of(r: &mut CheckRequest) -> &mut HttpRequest {
    r.attributes
        .as_mut()
        .unwrap()
        .request
        .as_mut()
        .unwrap()
        .http
        .as_mut()
        .unwrap()
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
    http_of(&mut raw).header_map = Some(HeaderMap {
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

fn in_set(set: &str) -> CheckRequest {
    let mut r = get(vec![], String::new());
    let a = r.attributes.as_mut().unwrap();
    a.context_extensions.insert("policy_set".into(), set.into());
    http_of(&mut r).method = "POST".into();
    r
}

#[test]
fn each_policy_set_has_its_own_dry_run_and_an_unknown_set_denies() {
    use std::sync::atomic::Ordering::Relaxed;
    let metrics = Arc::new(Metrics::default());
    let svc = service(&metrics);
    // The canary set denies everything but is in dry-run: allowed, and counted.
    assert!(allowed(&svc.decide(&in_set("canary"))));
    assert_eq!(metrics.dry_run_would_deny.load(Relaxed), 1);
    // The same policy, enforcing.
    let strict = svc.decide(&in_set("strict"));
    assert_eq!(strict.status.as_ref().unwrap().code, 7);
    // No set named: the first (default) set, which denies POST and is not in dry-run.
    let mut post = get(vec![], String::new());
    http_of(&mut post).method = "POST".into();
    assert!(!allowed(&svc.decide(&post)));
    // A set that does not exist fails closed.
    assert!(!allowed(&svc.decide(&in_set("nope"))));
    assert_eq!(metrics.failed_closed.load(Relaxed), 1);
    assert_eq!(metrics.dry_run_would_deny.load(Relaxed), 1);
}

#[tokio::test]
async fn serves_check_and_health_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authz.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let server = tokio::spawn(serve_unix(listener, service(&metrics), async move {
        let _ = stop_rx.changed().await;
    }));
    let p = path.clone();
    let channel = tonic::transport::Endpoint::from_static("http://unix")
        .connect_with_connector(tower::service_fn(move |_| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .unwrap();
    let mut c = AuthorizationClient::new(channel.clone());
    let r = tokio::time::timeout(Duration::from_secs(10), c.check(get(vec![], String::new())))
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    assert!(allowed(&r));
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn decision_log_modes_choose_what_is_recorded() {
    use esm_authz::check::{Checked, Failure};
    use esm_authz::decision::Decision;
    use esm_authz::service::DecisionLog;
    let c = |allowed: bool, policy_allowed: bool, failure: Option<Failure>| Checked {
        decision: Decision {
            allowed,
            ..Default::default()
        },
        policy_allowed,
        failure: failure.map(|f| (f, String::new())),
        memoized: false,
    };
    let allow = c(true, true, None);
    let deny = c(false, false, None);
    let failed = c(false, false, Some(Failure::Evaluation));
    let would_deny = c(true, false, None);
    assert!(DecisionLog::All.records(&allow, false));
    assert!(!DecisionLog::Denied.records(&allow, false));
    assert!(DecisionLog::Denied.records(&deny, false));
    assert!(DecisionLog::Denied.records(&failed, false));
    assert!(DecisionLog::Denied.records(&would_deny, true));
    assert!(!DecisionLog::Off.records(&deny, false));
}

fn denied_status(r: &envoy_types::pb::envoy::service::auth::v3::CheckResponse) -> Option<i32> {
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map(|s| s.code),
        _ => None,
    }
}

/// A config reload swaps the settings for every clone of the service (each listener holds
/// one) from the next Check on: the deny status, and a set's dry-run switch.
#[tokio::test]
async fn reconfigured_settings_apply_to_every_clone_from_the_next_check() {
    let metrics = Arc::new(Metrics::default());
    let svc = service(&metrics);
    let listener_copy = svc.clone();
    let mut delete = get(vec![], String::new());
    http_of(&mut delete).method = "DELETE".into();
    let r = listener_copy.decide(&delete);
    assert!(!allowed(&r));
    assert_eq!(denied_status(&r), Some(403));

    let mut s = (*svc.settings()).clone();
    assert_eq!(s.dry_run, vec![false, true, false]);
    s.opts.deny_status = 418;
    svc.reconfigure(s.clone());
    assert_eq!(denied_status(&listener_copy.decide(&delete)), Some(418));

    s.dry_run[0] = true;
    svc.reconfigure(s);
    assert!(allowed(&listener_copy.decide(&delete)));
}
