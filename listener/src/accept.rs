//! The accept loop: each connection is counted against its listener and its peer before
//! the server sees it; one over a limit is closed at once. Accept errors (out of
//! descriptors, a connection reset before it was accepted) never end the loop: the server
//! stays up and tries again shortly.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::time::Instant;

use crate::guarded::{Guarded, Slot};
use crate::limits::{Limits, Peer, Slots};
use crate::metrics::Metrics;

/// How long the loop waits after an accept error, so that running out of descriptors
/// does not become a busy loop.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// A socket that accepts connections and can tell whom each comes from.
pub trait Accept: Send + Sync + 'static {
    type Io: Send + 'static;
    fn accept_peer(&self) -> impl Future<Output = io::Result<(Self::Io, Peer)>> + Send;
}

impl Accept for TcpListener {
    type Io = TcpStream;

    async fn accept_peer(&self) -> io::Result<(TcpStream, Peer)> {
        let (stream, addr) = self.accept().await?;
        // A small Check response must not wait for the ACK of the one before it (Nagle).
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let uid = tokio::task::spawn_blocking(move || crate::peer_uid::lookup(addr, local))
            .await
            .ok()
            .flatten();
        Ok((stream, uid.map_or(Peer::Addr(addr.ip()), Peer::Uid)))
    }
}

impl Accept for UnixListener {
    type Io = UnixStream;

    async fn accept_peer(&self) -> io::Result<(UnixStream, Peer)> {
        let (stream, _) = self.accept().await?;
        let peer = stream
            .peer_cred()
            .map_or(Peer::Unknown, |c| Peer::Uid(c.uid()));
        Ok((stream, peer))
    }
}

/// The accept in progress when the listener is polled as a stream.
type NextConnection<Io> = Pin<Box<dyn Future<Output = Guarded<Io>> + Send>>;

/// A listener whose connections are held within [`Limits`].
pub struct GuardedListener<L: Accept> {
    inner: Arc<L>,
    name: &'static str,
    limits: Limits,
    slots: Arc<Mutex<Slots>>,
    metrics: Arc<Metrics>,
    pending: Option<NextConnection<L::Io>>,
}

impl<L: Accept> GuardedListener<L> {
    /// `name` names the listener in logs (`ext_authz`, `admin`).
    /// `name` also names its counters in `/metrics` (see [`crate::snapshots`]).
    pub fn new(inner: L, name: &'static str, limits: Limits) -> Self {
        Self {
            inner: Arc::new(inner),
            name,
            limits,
            slots: Arc::default(),
            metrics: crate::metrics::register(name),
            pending: None,
        }
    }

    /// This listener's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn get_ref(&self) -> &L {
        &self.inner
    }

    /// The next connection within the limits; those over them are closed meanwhile.
    pub fn accept(&self) -> impl Future<Output = Guarded<L::Io>> + Send + 'static {
        let (inner, name, limits) = (self.inner.clone(), self.name, self.limits);
        let (slots, metrics) = (self.slots.clone(), self.metrics.clone());
        async move {
            loop {
                let (io, peer) = match inner.accept_peer().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(listener = name, error = %e, "accept failed; retrying");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                };
                let taken = slots.lock().unwrap_or_else(PoisonError::into_inner).take(
                    peer,
                    limits.max_connections,
                    limits.max_per_peer,
                );
                if let Err(full) = taken {
                    if metrics.refused(full) {
                        tracing::warn!(listener = name, peer = ?peer, limit = ?full,
                            "connection refused: too many held (counted in esm_listener_refused_total)");
                    }
                    drop(io);
                    continue;
                }
                metrics.accepted();
                let slot = Slot {
                    slots: slots.clone(),
                    peer,
                    metrics: metrics.clone(),
                };
                let deadline = Instant::now() + limits.first_bytes_within;
                return Guarded::new(io, slot, limits.first_bytes, deadline);
            }
        }
    }
}

/// As a stream of connections, for tonic's `serve_with_incoming`; it never ends and never
/// yields an error.
impl<L: Accept> tokio_stream::Stream for GuardedListener<L> {
    type Item = io::Result<Guarded<L::Io>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let pending = match &mut this.pending {
            Some(pending) => pending,
            None => this.pending.insert(Box::pin(this.accept())),
        };
        match pending.as_mut().poll(cx) {
            Poll::Ready(conn) => {
                this.pending = None;
                Poll::Ready(Some(Ok(conn)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<L: Accept> Unpin for GuardedListener<L> {}
