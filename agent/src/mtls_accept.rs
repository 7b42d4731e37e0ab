//! The accept loop of an mTLS listener: each connection's handshake on its own task,
//! bounded in time, and the connection type tonic serves, which carries the peer's SPIFFE
//! ID (see [`super::mtls`] for the certificates and the checks).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

use crate::mtls::{server_config, Credentials};
use crate::mtls_peers::{peer_spiffe_id, PeerSpiffeId};

/// An accepted connection as the logs name its peer.
pub trait PeerLabel {
    fn peer_label(&self) -> String;
}

impl PeerLabel for tokio::net::TcpStream {
    fn peer_label(&self) -> String {
        self.peer_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string())
    }
}

impl<T: PeerLabel> PeerLabel for esm_listener::Guarded<T> {
    fn peer_label(&self) -> String {
        self.get_ref().peer_label()
    }
}

/// An accepted mutual-TLS connection over `T` (a TCP stream, or one held within a bounded
/// listener's limits).
pub struct MtlsConnection<T>(pub TlsStream<T>);

impl<T> Connected for MtlsConnection<T> {
    type ConnectInfo = PeerSpiffeId;

    fn connect_info(&self) -> PeerSpiffeId {
        let (_, conn) = self.0.get_ref();
        PeerSpiffeId(
            conn.peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| peer_spiffe_id(c)),
        )
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for MtlsConnection<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MtlsConnection<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// How long a client has to complete its handshake.
const HANDSHAKE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Completes the handshake of each connection `accepted` yields on its own task (bounded
/// to 10 s), so a slow or hostile client never holds up the others; a failed one is logged
/// and counted. An accept error is logged and the next connection awaited.
pub fn incoming<S, T>(
    mut accepted: S,
    creds: Arc<Credentials>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<MtlsConnection<T>>>
where
    S: Stream<Item = std::io::Result<T>> + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + PeerLabel + Unpin + Send + 'static,
{
    let (name, refusals) = (creds.name(), creds.refusals().clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(creds)));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let io = tokio::select! {
                r = accepted.next() => match r {
                    Some(Ok(io)) => io,
                    Some(Err(e)) => {
                        tracing::warn!(listener = name, error = %e, "TCP accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                    None => return,
                },
                _ = tx.closed() => return,
            };
            let (acceptor, tx, refusals) = (acceptor.clone(), tx.clone(), refusals.clone());
            tokio::spawn(async move {
                let peer = io.peer_label();
                match tokio::time::timeout(HANDSHAKE_WITHIN, acceptor.accept(io)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(MtlsConnection(tls))).await;
                    }
                    Ok(Err(e)) => {
                        refusals.handshake_failed();
                        tracing::info!(listener = name, peer = %peer, error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        refusals.handshake_failed();
                        tracing::info!(listener = name, peer = %peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The connections of a plain TCP listener, each with Nagle off: SDS pushes and Check
/// answers are small frames that must not wait for the peer's ACK of the one before.
pub fn tcp_accepted(
    listener: tokio::net::TcpListener,
) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> + Unpin + Send + 'static {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|r| {
        r.inspect(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
        })
    })
}
