//! One accepted connection: the I/O of the socket, with the slot it holds given back when
//! the server drops it, and closed (read as end of stream) when its first bytes do not
//! arrive in time, which the HTTP/2 server would otherwise wait for without end.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::limits::{Peer, Slots};
use crate::metrics::Metrics;

/// Gives the slot back when the connection is dropped, however it ends.
pub(crate) struct Slot {
    pub(crate) slots: Arc<Mutex<Slots>>,
    pub(crate) peer: Peer,
    pub(crate) metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .give_back(self.peer);
        self.metrics.closed();
    }
}

/// An accepted connection that holds a slot of its listener.
pub struct Guarded<T> {
    io: T,
    peer: Peer,
    /// Bytes still owed before the deadline, and the deadline; `None` once they came.
    owed: Option<(usize, Pin<Box<Sleep>>)>,
    _slot: Slot,
}

impl<T> Guarded<T> {
    pub(crate) fn new(io: T, slot: Slot, first_bytes: usize, deadline: Instant) -> Self {
        let owed =
            (first_bytes > 0).then(|| (first_bytes, Box::pin(tokio::time::sleep_until(deadline))));
        Self {
            io,
            peer: slot.peer,
            owed,
            _slot: slot,
        }
    }

    /// The socket itself (for its peer's credentials or addresses).
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Whom this connection is counted against.
    pub fn peer(&self) -> Peer {
        self.peer
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some((owed, deadline)) = &mut this.owed {
            if let Poll::Ready(Ok(())) = read {
                *owed = owed.saturating_sub(buf.filled().len() - before);
                if *owed == 0 {
                    this.owed = None;
                    return read;
                }
            }
            if read.is_pending() && deadline.as_mut().poll(cx).is_ready() {
                this._slot.metrics.stalled();
                tracing::debug!(peer = ?this.peer, "connection sent too little too slowly; closed");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client's first bytes did not arrive in time",
                )));
            }
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
