//! The one wait of every long-lived thing the agent serves: an SDS stream, a Workload API
//! stream, and the certificate of an mTLS listener. Each sleeps until one of these happens:
//! its client sends a request (SDS), an SVID it follows changes, the CA publishes new
//! material, or the registration entries change. (A client going away drops the stream
//! itself, and with it the wait.) It then looks at the
//! world again and decides what to send; the deciding is elsewhere and pure (see
//! [`super::xds`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use esm_ca::material::CaMaterial;
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::Streaming;

use super::context::AgentContext;
use super::entry_index::EntrySet;

/// A long-lived answer (an SDS or Workload API stream) with no task or queue of its own:
/// its next response is made when the server asks for one, so a client that stops reading
/// stops it (HTTP/2 flow control), and one that goes away drops it.
pub trait Responder: Send + 'static {
    type Item: Send + 'static;
    /// The next response; `None` once the stream is over.
    fn next(&mut self) -> impl Future<Output = Option<Self::Item>> + Send;
}

/// The response stream of `r`.
pub fn responses<R: Responder>(r: R) -> Pin<Box<dyn Stream<Item = R::Item> + Send>> {
    Box::pin(futures_util::stream::unfold(r, |mut r| async move {
        let item = r.next().await?;
        Some((item, r))
    }))
}

/// What woke the waiter.
#[derive(Debug)]
pub enum Wake<R> {
    /// The client sent a request.
    Request(R),
    /// Something it follows changed (CA, entries, an SVID it holds): look again.
    Changed,
    /// The client went away, or what it follows closed (the server is stopping).
    Closed,
}

/// What a waiter follows besides its client: the CA material always, the registration
/// entries when what it serves depends on them.
pub struct Follow {
    ca: watch::Receiver<Arc<CaMaterial>>,
    entries: Option<watch::Receiver<Arc<EntrySet>>>,
    /// When the oldest CA change not yet answered was seen: what SDS push latency is
    /// counted from.
    ca_changed_at: Option<std::time::Instant>,
}

impl Follow {
    /// The CA and the entries, both taken as seen now.
    pub fn all(ctx: &AgentContext) -> Self {
        let mut f = Self::ca_only(ctx);
        let mut entries = ctx.entries.clone();
        entries.borrow_and_update();
        f.entries = Some(entries);
        f
    }

    /// The CA only (the listener's own certificate does not depend on entries).
    pub fn ca_only(ctx: &AgentContext) -> Self {
        Self::material(&ctx.ca)
    }

    /// The CA material on `ca` only, taken as seen now (an mTLS listener's certificate).
    pub fn material(ca: &watch::Receiver<Arc<CaMaterial>>) -> Self {
        let mut ca = ca.clone();
        ca.borrow_and_update();
        Self {
            ca,
            entries: None,
            ca_changed_at: None,
        }
    }

    /// When the oldest CA change not answered since was seen; forgets it. A responder that
    /// sent (or had nothing new to send) calls this after the wake it answered.
    pub fn take_ca_change(&mut self) -> Option<std::time::Instant> {
        self.ca_changed_at.take()
    }

    /// The CA material as last seen.
    pub fn ca(&self) -> Arc<CaMaterial> {
        self.ca.borrow().clone()
    }

    /// Waits for the next request on `inbound`, `refresh`, or a change.
    pub async fn request<R>(
        &mut self,
        inbound: &mut Streaming<R>,
        refresh: impl Future<Output = ()>,
    ) -> Wake<R> {
        let request = async {
            match inbound.next().await {
                Some(Ok(req)) => Wake::Request(req),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "agent stream failed");
                    Wake::Closed
                }
                None => Wake::Closed,
            }
        };
        self.wait(request, refresh).await
    }

    /// Waits for `refresh` or a change, with no requests to read.
    pub async fn change_only(&mut self, refresh: impl Future<Output = ()>) -> Wake<()> {
        self.wait(std::future::pending(), refresh).await
    }

    async fn wait<R>(
        &mut self,
        client: impl Future<Output = Wake<R>>,
        refresh: impl Future<Output = ()>,
    ) -> Wake<R> {
        let Self {
            ca,
            entries,
            ca_changed_at,
        } = self;
        let entries_changed = async {
            match entries.as_mut() {
                Some(e) => e.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let wake = tokio::select! {
            w = client => w,
            () = refresh => Wake::Changed,
            r = ca.changed() => if r.is_ok() {
                ca_changed_at.get_or_insert_with(std::time::Instant::now);
                Wake::Changed
            } else {
                Wake::Closed
            },
            ok = entries_changed => if ok { Wake::Changed } else { Wake::Closed },
        };
        // Another branch may have won while the CA changed too (a renewed SVID and the new
        // CA that caused it arrive together): the change is still seen, and timed from here,
        // before it is marked read.
        if matches!(ca.has_changed(), Ok(true)) {
            ca_changed_at.get_or_insert_with(std::time::Instant::now);
        }
        ca.borrow_and_update();
        if let Some(e) = entries.as_mut() {
            e.borrow_and_update();
        }
        wake
    }
}
