//! Connections on the agent's Unix socket. Each one is relayed through
//! [`super::h2_authority`] so gRPC C-core clients get through tonic, and keeps what
//! attestation needs: the kernel's peer credentials and the peer process pinned at accept
//! ([`PeerBinding`]), taken from the real socket, never from the relay.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tonic::transport::server::Connected;

use super::h2_authority::Rewriter;
use super::peer_process::PeerBinding;

/// Bytes buffered between the socket and tonic in each direction.
const RELAY: usize = 16 << 10;
/// One read from the client: small, because every open connection keeps one.
const READ: usize = 2 << 10;

/// What every request of a connection carries: its peer as recorded at accept; `None` when
/// the kernel gave no credentials.
#[derive(Debug, Clone)]
pub struct UnixPeer(pub Option<Arc<PeerBinding>>);

/// What tonic reads and writes for one accepted connection.
pub struct AgentUnix {
    io: DuplexStream,
    info: UnixPeer,
}

impl Connected for AgentUnix {
    type ConnectInfo = UnixPeer;

    fn connect_info(&self) -> UnixPeer {
        self.info.clone()
    }
}

impl AsyncRead for AgentUnix {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgentUnix {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Relays one connection: client bytes through the rewriter, server bytes as they are.
/// The peer is pinned before anything else.
fn relay(stream: tokio::net::UnixStream) -> AgentUnix {
    let info = UnixPeer(PeerBinding::at_accept(&stream).ok().map(Arc::new));
    let (ours, theirs) = tokio::io::duplex(RELAY);
    let (mut from_client, mut to_client) = stream.into_split();
    let (mut from_server, mut to_server) = tokio::io::split(ours);
    tokio::spawn(async move {
        let mut rewriter = Rewriter::default();
        let (mut buf, mut out) = (vec![0u8; READ], Vec::new());
        loop {
            let n = match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            out.clear();
            if let Err(e) = rewriter.feed(&buf[..n], &mut out) {
                tracing::info!(error = ?e, "agent socket: malformed HTTP/2 from client; closing");
                break;
            }
            if to_server.write_all(&out).await.is_err() {
                break;
            }
        }
        let _ = to_server.shutdown().await;
    });
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        let _ = to_client.shutdown().await;
    });
    AgentUnix { io: theirs, info }
}

/// Accepted connections of `listener`, relayed.
pub fn incoming(
    listener: tokio::net::UnixListener,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<AgentUnix>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "agent socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            if tx.send(Ok(relay(stream))).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
