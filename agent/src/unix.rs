//! Connections on the agent's Unix socket. Each one is relayed through
//! [`super::h2_authority`] so gRPC C-core clients get through tonic, and keeps what
//! attestation needs: the kernel's peer credentials and the peer process pinned at accept
//! ([`PeerBinding`]), taken from the real socket, never from the relay.
//! Connections are admitted within [`Limits`] and closed when they stall (see
//! [`super::connection_limits`]).
//!
//! What one connection's relay holds is bounded whatever the client sends: while it sends,
//! at most about 250 KiB (a read of 2 KiB, a partial frame of 16 KiB, a header block of
//! 64 KiB, its re-encoding of up to 32 KiB, the rewriter's output budget of 64 KiB plus one
//! block, and 2 x 16 KiB between relay and server); at rest about 50 KiB, as buffers grown
//! by a burst are given back down to `KEEP`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::time::Instant;
use tonic::transport::server::Connected;

use super::connection_limits::{Limits, Slot, Slots};
use super::h2_authority::{Malformed, Rewriter};
use super::peer_process::PeerBinding;

/// Bytes buffered between the socket and tonic in each direction.
const RELAY: usize = 16 << 10;
/// One read from the client: small, because every open connection keeps one.
const READ: usize = 2 << 10;
/// Buffer space kept between reads (output and the rewriter's); a burst of frames can grow
/// them past this, and the excess is given back once written. A request's headers and a
/// small message fit.
const KEEP: usize = 4 << 10;
/// At most one warning this often about refused connections, so a flood of them does not
/// become a flood of logs.
const WARN_EVERY: Duration = Duration::from_secs(10);

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

/// Reads the client, rewrites, and writes to the server until the client is done (`Ok`),
/// or breaks HTTP/2 or a limit, or stalls (`Err`: close the connection).
async fn client_to_server(
    mut from_client: impl AsyncRead + Unpin,
    mut to_server: impl AsyncWrite + Unpin,
    stall: Duration,
) -> Result<(), Malformed> {
    let mut rewriter = Rewriter::default();
    let (mut buf, mut out) = (vec![0u8; READ], Vec::new());
    // The preface and the first frame are owed from the moment of connecting.
    let mut owing_since = Some(Instant::now());
    loop {
        let read = from_client.read(&mut buf);
        let read = match owing_since {
            Some(t) => tokio::time::timeout_at(t + stall, read)
                .await
                .map_err(|_| {
                    Malformed(format!(
                        "stalled for {stall:?} mid-frame or before its preface"
                    ))
                })?,
            None => read.await,
        };
        let mut input = match read {
            Ok(n) if n > 0 => &buf[..n],
            // The client is gone or done sending: the server must read EOF too, or it
            // keeps the connection (and with it the slot and every stream) for ever.
            // Dropping `to_server` does not do it: the duplex's read half lives on in the
            // relay's other direction.
            _ => {
                let _ = to_server.shutdown().await;
                return Ok(());
            }
        };
        loop {
            out.clear();
            rewriter.feed(input, &mut out)?;
            input = &[];
            if to_server.write_all(&out).await.is_err() {
                return Ok(());
            }
            if !rewriter.backlog() {
                break;
            }
        }
        out.shrink_to(KEEP);
        rewriter.shrink_to(KEEP);
        owing_since = (!rewriter.at_rest()).then(|| owing_since.unwrap_or_else(Instant::now));
    }
}

/// Relays one connection: client bytes through the rewriter, server bytes as they are. One
/// task holds the socket and `slot` until the server closes or the client is refused.
/// The peer is pinned before anything else.
fn relay(mut stream: tokio::net::UnixStream, slot: Slot, stall: Duration) -> AgentUnix {
    let info = UnixPeer(PeerBinding::at_accept(&stream).ok().map(Arc::new));
    let (ours, theirs) = tokio::io::duplex(RELAY);
    tokio::spawn(async move {
        let (from_client, mut to_client) = stream.split();
        let (mut from_server, to_server) = tokio::io::split(ours);
        let up = client_to_server(from_client, to_server, stall);
        let down = async {
            let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
            let _ = to_client.shutdown().await;
        };
        tokio::pin!(up, down);
        tokio::select! {
            () = &mut down => {}
            r = &mut up => match r {
                // The client is gone (or has shut its sending side, which gRPC clients never
                // do: theirs is END_STREAM on a stream) and the server has read EOF; what it
                // still writes before closing goes out.
                Ok(()) => down.await,
                Err(e) => tracing::info!(
                    peer.uid = slot.uid(),
                    error = %e.0,
                    "agent socket: closing client connection"
                ),
            },
        }
        drop(slot);
    });
    AgentUnix { io: theirs, info }
}

/// Accepted connections of `listener`, relayed; those over `limits` are closed at once.
pub fn incoming(
    listener: tokio::net::UnixListener,
    limits: Limits,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<AgentUnix>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let slots = Arc::new(Mutex::new(Slots::default()));
    tokio::spawn(async move {
        let mut refused = 0u64;
        let mut warned: Option<Instant> = None;
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
            let uid = stream.peer_cred().ok().map(|c| c.uid());
            let slot = match Slot::take(&slots, uid, &limits) {
                Ok(slot) => slot,
                Err(full) => {
                    // Dropped here: the client reads EOF now rather than waiting in a queue.
                    refused += 1;
                    if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                        tracing::warn!(
                            peer.uid = uid,
                            limit = ?full,
                            connections.refused = refused,
                            "agent socket full: connection refused"
                        );
                        warned = Some(Instant::now());
                    }
                    continue;
                }
            };
            if tx
                .send(Ok(relay(stream, slot, limits.stall)))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
