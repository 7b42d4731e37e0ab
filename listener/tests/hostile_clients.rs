//! Hostile clients against a guarded listener, over real loopback sockets: connections
//! that never speak, that speak too little, and more connections than a peer may hold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use esm_listener::{GuardedListener, Limits, Peer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

fn limits(total: usize, per_peer: usize) -> Limits {
    Limits {
        max_connections: total,
        max_per_peer: per_peer,
        first_bytes_within: Duration::from_millis(300),
        first_bytes: 4,
    }
}

/// Echoes every guarded connection until it ends.
fn echo<L: esm_listener::Accept>(listener: GuardedListener<L>) -> tokio::task::JoinHandle<()>
where
    L::Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::spawn(async move {
        loop {
            let mut conn = listener.accept().await;
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = conn.read(&mut buf).await {
                    if conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

/// True when the server closed `conn` within `within` (whatever it echoed before).
async fn closed_within(conn: &mut (impl AsyncReadExt + Unpin), within: Duration) -> bool {
    let mut buf = [0u8; 16];
    let until_closed = async { while let Ok(1..) = conn.read(&mut buf).await {} };
    tokio::time::timeout(within, until_closed).await.is_ok()
}

async fn tcp_server(l: Limits) -> (std::net::SocketAddr, GuardedListener<TcpListener>) {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    (addr, GuardedListener::new(tcp, "test_tcp", l))
}

#[tokio::test]
async fn a_connection_that_never_speaks_is_closed_after_the_deadline() {
    let (addr, listener) = tcp_server(limits(8, 8)).await;
    let metrics = listener.metrics().clone();
    let _server = echo(listener);
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    trickle.write_all(b"ab").await.unwrap();
    let mut speaker = TcpStream::connect(addr).await.unwrap();
    speaker.write_all(b"abcd").await.unwrap();

    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    assert!(closed_within(&mut trickle, Duration::from_secs(5)).await);
    // The one that sent its first bytes in time is served past the deadline.
    let mut echoed = [0u8; 4];
    speaker.read_exact(&mut echoed).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    speaker.write_all(b"more").await.unwrap();
    speaker.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"more");
    assert_eq!(metrics.snapshot().stalled, 2);
}

#[tokio::test]
async fn connections_over_the_peer_cap_are_closed_at_once_and_slots_come_back() {
    let (addr, listener) = tcp_server(limits(100, 3)).await;
    let metrics = listener.metrics().clone();
    let _server = echo(listener);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"helo").await.unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).await.unwrap();
        held.push(c);
    }
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    assert!(closed_within(&mut fourth, Duration::from_secs(2)).await);
    let s = metrics.snapshot();
    assert_eq!((s.open, s.refused_peer_full), (3, 1));

    // One closes: its slot is free again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = TcpStream::connect(addr).await.unwrap();
    again.write_all(b"helo").await.unwrap();
    let mut b = [0u8; 4];
    again.read_exact(&mut b).await.unwrap();
    assert_eq!(metrics.snapshot().open, 3);
}

#[tokio::test]
async fn loopback_tcp_peers_are_counted_by_their_uid() {
    let (addr, listener) = tcp_server(limits(8, 8)).await;
    let accepted = tokio::spawn(async move { listener.accept().await.peer() });
    let _client = TcpStream::connect(addr).await.unwrap();
    let peer = accepted.await.unwrap();
    assert!(matches!(peer, Peer::Uid(_)), "{peer:?}");
}

#[tokio::test]
async fn thousands_of_connections_hold_no_more_than_the_listener_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let unix = UnixListener::bind(&path).unwrap();
    let listener = GuardedListener::new(unix, "test_unix", limits(64, 64));
    let metrics = listener.metrics().clone();
    let _server = echo(listener);
    let mut conns = Vec::new();
    for _ in 0..2000 {
        conns.push(UnixStream::connect(&path).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = metrics.snapshot();
    assert!(s.open <= 64, "{s:?}");
    assert!(
        s.refused_listener_full + s.refused_peer_full >= 1936,
        "{s:?}"
    );
    // Silent ones go at the deadline; then a new client is served.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(metrics.snapshot().open, 0);
    drop(conns);
    let mut c = UnixStream::connect(&path).await.unwrap();
    c.write_all(b"helo").await.unwrap();
    let mut b = [0u8; 4];
    c.read_exact(&mut b).await.unwrap();
}
