//! Connection and stream limits on the agent's Unix socket, over raw HTTP/2 bytes: clients
//! that hold connections without speaking, and one connection that opens streams or makes
//! the server reset them without end. Each is refused, and a well-behaved client is served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_socket;

use std::time::Duration;

use agent_socket::*;
use esm_agent::connection_limits::Limits;
use esm_agent::server::{MAX_LOCAL_ERROR_RESETS, MAX_STREAMS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once_and_stalled_ones_free_their_slots() {
    let stall = Duration::from_secs(3);
    let a = agent(Limits {
        max_connections: 5,
        max_connections_per_uid: 5,
        stall,
        ..Limits::default()
    })
    .await;
    let t0 = tokio::time::Instant::now();
    // Four slots held by clients that stall: two silent, one halfway through the preface,
    // one inside a header block it never ends (slowloris).
    let mut stalled = Vec::new();
    for bytes in [
        &b""[..],
        b"",
        &PREFACE[..10],
        &[
            PREFACE,
            &frame(SETTINGS, 0, 0, &[]),
            &frame(HEADERS, 0, 1, &[0x82]),
        ]
        .concat(),
    ] {
        let mut s = UnixStream::connect(&a.sock).await.unwrap();
        s.write_all(bytes).await.unwrap();
        stalled.push(s);
    }
    // The fifth: a client that has spoken and now waits between frames, as an idle
    // Envoy does. It is never timed out.
    let mut quiet = UnixStream::connect(&a.sock).await.unwrap();
    quiet
        .write_all(&[PREFACE, &frame(SETTINGS, 0, 0, &[])].concat())
        .await
        .unwrap();
    // Once the server speaks on the fifth, all five have been accepted (in order).
    let mut settings = [0u8; 9];
    quiet.read_exact(&mut settings).await.unwrap();
    assert_eq!(settings[3], SETTINGS);
    // The socket is full: the next connection is closed at once, not queued.
    let mut over = UnixStream::connect(&a.sock).await.unwrap();
    assert!(closed_within(&mut over, Duration::from_millis(500)).await);
    assert!(served(&a.sock).await.is_err(), "served over the cap");
    assert!(
        t0.elapsed() < stall,
        "too slow to tell the cap from the stall"
    );
    // Stalled clients are closed once `stall` has passed; the quiet one is not.
    for s in &mut stalled {
        assert!(closed_within(s, stall + Duration::from_secs(2)).await);
    }
    assert!(!closed_within(&mut quiet, Duration::from_millis(300)).await);
    served(&a.sock).await.unwrap();
}

const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn error_code(payload: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        payload.get(at..at + 4)?.try_into().ok()?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_hold_more_than_max_streams_open() {
    let a = agent(Limits::default()).await;
    let mut s = handshake(&a.sock).await;
    let block = stream_secrets(&[]);
    // MAX_STREAMS calls that stay open (each waits for its first request), and one more.
    let streams: Vec<u32> = (0..=MAX_STREAMS).map(|i| 2 * i + 1).collect();
    let bytes: Vec<u8> = streams
        .iter()
        .flat_map(|&id| frame(HEADERS, END_HEADERS, id, &block))
        .collect();
    s.write_all(&bytes).await.unwrap();
    let last = *streams.last().unwrap();
    let refused = wait_for(&mut s, Duration::from_secs(10), |kind, stream, p| {
        (kind == RST_STREAM && stream == last).then(|| error_code(p, 0))
    })
    .await;
    assert_eq!(refused, Some(Some(REFUSED_STREAM)));
    served(&a.sock).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_making_the_server_reset_stream_after_stream_is_sent_away() {
    let a = agent(Limits::default()).await;
    let s = handshake(&a.sock).await;
    // Conflicting content-lengths: each such call is reset by the server (PROTOCOL_ERROR).
    let block = stream_secrets(&[(b"content-length", b"1"), (b"content-length", b"2")]);
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        for i in 0..MAX_LOCAL_ERROR_RESETS as u32 + 10 {
            if wr
                .write_all(&frame(HEADERS, END_HEADERS, 2 * i + 1, &block))
                .await
                .is_err()
            {
                break;
            }
        }
        wr
    });
    let goaway = wait_for(&mut rd, Duration::from_secs(20), |kind, _, p| {
        (kind == GOAWAY).then(|| error_code(p, 4))
    })
    .await;
    writer.abort();
    assert_eq!(goaway, Some(Some(ENHANCE_YOUR_CALM)));
    served(&a.sock).await.unwrap();
}

/// A client that closes its connection gives its slot back, however far it got: a uid that
/// connects more times over esm's life than its cap must still be served. (The relay once
/// kept every closed connection open towards the server, so a uid's 257th connection in a
/// process's life was refused.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_by_their_clients_free_their_slots() {
    let a = agent(Limits {
        max_connections: 3,
        max_connections_per_uid: 3,
        stall: Duration::from_secs(30),
        ..Limits::default()
    })
    .await;
    let served_soon = || async {
        let t0 = tokio::time::Instant::now();
        loop {
            match served(&a.sock).await {
                Ok(()) => return,
                Err(e) if t0.elapsed() > Duration::from_secs(3) => {
                    panic!("a slot was not given back: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    for _ in 0..10 {
        served_soon().await;
    }
    // Clients that hung up without a GOAWAY (as gRPC C-core does), before a request:
    // silent, preface only, after the handshake.
    for _ in 0..4 {
        drop(UnixStream::connect(&a.sock).await.unwrap());
        served_soon().await;
        let mut s = UnixStream::connect(&a.sock).await.unwrap();
        let _ = s.write_all(PREFACE).await; // refused at once when no slot is left
        drop(s);
        served_soon().await;
        drop(handshake(&a.sock).await);
        served_soon().await;
    }
}

/// One uid's streams over all its connections are bounded: over its budget it is refused
/// at once with RESOURCE_EXHAUSTED, and a stream that ends gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_uids_budget_are_refused_until_one_ends() {
    let a = agent(Limits {
        max_streams_per_uid: 3,
        ..Limits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(open_bundle_stream(&a.sock).await.unwrap());
    }
    let refused = open_bundle_stream(&a.sock).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    let unary = served(&a.sock).await.unwrap_err();
    assert!(unary.contains("limit"), "{unary}");
    held.pop();
    let t0 = tokio::time::Instant::now();
    while served(&a.sock).await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the ended stream kept its place"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
