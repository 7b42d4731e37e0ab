//! Hostile HTTP/2 clients on the ext_authz port, spoken to at the frame level: a client
//! that never reads its answers, and one that starts a request and never finishes it.
//! Each holds no more than its bounds, and an honest client is still answered meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use esm_authz::check::CheckOptions;
use esm_authz::policy_set::{PolicySet, SourceFile};
use esm_authz::service::{
    serve, AuthzService, Metrics, ServedSet, MAX_STREAMS_PER_CONNECTION, REQUEST_TIMEOUT,
};
use prost::Message;
use tokio::sync::watch;

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

async fn start() -> std::net::SocketAddr {
    let set = PolicySet::compile(
        vec![SourceFile {
            path: "p.rego".into(),
            text: "package envoy.authz\nimport rego.v1\ndefault allow := true\n".into(),
        }],
        "data.envoy.authz.allow",
    )
    .unwrap();
    let (tx, rx) = watch::channel(Arc::new(set));
    std::mem::forget(tx);
    let served = ServedSet {
        name: "default".into(),
        dry_run: false,
        policies: rx,
    };
    let svc = AuthzService::new(
        vec![served],
        CheckOptions::default(),
        None,
        Arc::new(Metrics::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, svc, std::future::pending()));
    addr
}

/// A Check as gRPC puts it on the wire: uncompressed flag, length, message.
fn grpc_frame(req: &CheckRequest) -> bytes::Bytes {
    let msg = req.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    frame.into()
}

fn check_headers(addr: std::net::SocketAddr) -> http::Request<()> {
    http::Request::post(format!("http://{addr}{CHECK}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

async fn h2_client(
    addr: std::net::SocketAddr,
    window: u32,
) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(tcp)
        .await
        .unwrap();
    tokio::spawn(conn);
    // Let the server's SETTINGS (its stream limit) arrive before streams are opened.
    let mut send = send.ready().await.unwrap();
    let (resp, _) = send.send_request(check_headers(addr), true).unwrap();
    let _ = resp.await;
    send
}

/// An honest client's Check is answered within a second.
async fn honest_client_is_answered(addr: std::net::SocketAddr) {
    let mut c = AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(1), c.check(CheckRequest::default()))
        .await
        .expect("an honest Check is answered while the hostile client holds its streams")
        .unwrap();
    assert_eq!(answer.into_inner().status.unwrap().code, 0);
}

/// How many of `responses` have their headers within 2 s.
async fn futures_answered<'a>(
    responses: impl Iterator<Item = &'a mut h2::client::ResponseFuture>,
) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut n = 0;
    for r in responses {
        n += usize::from(matches!(
            tokio::time::timeout_at(deadline, r).await,
            Ok(Ok(_))
        ));
    }
    n
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_holds_at_most_the_stream_limit() {
    let addr = start().await;
    // A receive window of zero: the server can send no answer's body, ever.
    let mut send = h2_client(addr, 0).await;
    // The client queues what the server's stream limit does not let it open; the server
    // answers (headers only, no body can pass) just the streams it accepted.
    let mut held = Vec::new();
    for _ in 0..MAX_STREAMS_PER_CONNECTION + 100 {
        send = send.ready().await.unwrap();
        let (resp, mut body) = send.send_request(check_headers(addr), false).unwrap();
        body.send_data(grpc_frame(&CheckRequest::default()), true)
            .unwrap();
        held.push((resp, body));
    }
    let answered = futures_answered(held.iter_mut().map(|(r, _)| r)).await;
    assert_eq!(
        answered, MAX_STREAMS_PER_CONNECTION as usize,
        "one connection holds exactly the stream limit, no more"
    );
    honest_client_is_answered(addr).await;
}

#[tokio::test]
async fn a_request_never_finished_is_ended_by_the_server() {
    let addr = start().await;
    let mut send = h2_client(addr, 65_535).await;
    send = send.ready().await.unwrap();
    let (resp, mut body) = send.send_request(check_headers(addr), false).unwrap();
    // Three bytes of a five-byte gRPC frame header, then nothing.
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0]), false)
        .unwrap();
    honest_client_is_answered(addr).await;

    let answer = tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), resp)
        .await
        .expect("the server ends the half-sent request after its timeout");
    if let Ok(r) = answer {
        // A trailers-only gRPC answer: an error status, never a decision.
        let status = r
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            status.as_deref().is_some_and(|s| s != "0"),
            "unexpected answer {r:?}"
        );
    }
}
