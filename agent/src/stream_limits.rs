//! Streams held at once by one peer uid on the agent socket, across all its connections.
//!
//! The per-connection stream limit (`server::MAX_STREAMS`) and the per-uid connection
//! limit (`connection_limits`) bound what one uid can hold only to their product: 256
//! connections of 200 streams. A client that opens that many SDS or Workload API streams and
//! never reads them leaves an answer buffered in every one — measured at about 12 KiB a
//! stream, so 600 MiB for one uid — and keeps both cores busy while it opens them, during
//! which other workloads' new connections wait seconds. A per-uid budget bounds both: a uid
//! over it is refused at once with RESOURCE_EXHAUSTED before any handler runs, and what it
//! holds it takes only from itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use esm_listener::{Peer, Slots};
use http_body_util::BodyExt;

use super::connection_limits::lock;
use super::context::AgentMetrics;
use super::unix::UnixPeer;

/// Streams open per uid, against one budget: counted as connections are on esm's
/// listeners ([`Slots`]), with no cap on the total.
#[derive(Clone)]
pub struct StreamBudget {
    per_uid: usize,
    open: Arc<Mutex<Slots>>,
    metrics: Arc<AgentMetrics>,
}

/// One stream's share of its uid's budget, given back when dropped (when the stream ends).
pub struct StreamPermit {
    uid: u32,
    open: Arc<Mutex<Slots>>,
}

impl StreamBudget {
    /// Streams turned away are counted in `metrics.streams_refused`.
    pub fn new(per_uid: usize, metrics: Arc<AgentMetrics>) -> Self {
        Self {
            per_uid,
            open: Arc::default(),
            metrics,
        }
    }

    /// A permit for one more stream of `uid`, or `None` when it holds its budget.
    pub fn take(&self, uid: u32) -> Option<StreamPermit> {
        if lock(&self.open)
            .take(Peer::Uid(uid), usize::MAX, self.per_uid)
            .is_err()
        {
            self.metrics.streams_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(StreamPermit {
            uid,
            open: self.open.clone(),
        })
    }

    /// Streams `uid` holds now.
    pub fn held(&self, uid: u32) -> usize {
        lock(&self.open).held_by(Peer::Uid(uid))
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        lock(&self.open).give_back(Peer::Uid(self.uid));
    }
}

/// The tower layer that applies a [`StreamBudget`] to every call on the Unix socket.
#[derive(Clone)]
pub struct PerUidStreams {
    pub budget: StreamBudget,
}

impl<S> tower::Layer<S> for PerUidStreams {
    type Service = PerUidStreamsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PerUidStreamsService {
            inner,
            budget: self.budget.clone(),
        }
    }
}

#[derive(Clone)]
pub struct PerUidStreamsService<S> {
    inner: S,
    budget: StreamBudget,
}

type Reply<E> = Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for PerUidStreamsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Reply<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let uid = req
            .extensions()
            .get::<UnixPeer>()
            .and_then(|p| p.0.as_ref())
            .map(|p| p.cred().uid);
        let Some(uid) = uid else {
            // Not a Unix peer (or its credentials are unknown): the handler refuses it.
            return Box::pin(self.inner.call(req));
        };
        let Some(permit) = self.budget.take(uid) else {
            tracing::debug!(peer.uid = uid, "agent socket: stream over the uid's budget");
            let status = tonic::Status::resource_exhausted(format!(
                "uid {uid} holds {} streams on the agent socket, its limit",
                self.budget.per_uid
            ));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let reply = self.inner.call(req);
        Box::pin(async move {
            let resp = reply.await?;
            // The permit lives as long as the response body: to the stream's end. (An error
            // answer is trailers only; tonic drops its body at once, and the permit with
            // it, which is right: that call is over.)
            Ok(resp.map(|body| {
                tonic::body::Body::new(body.map_frame(move |frame| {
                    let _held = &permit;
                    frame
                }))
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_over_its_budget_is_refused_and_others_are_not() {
        let metrics = Arc::new(AgentMetrics::default());
        let b = StreamBudget::new(2, metrics.clone());
        let first = b
            .take(1000)
            .into_iter()
            .chain(b.take(1000))
            .collect::<Vec<_>>();
        assert_eq!(first.len(), 2);
        assert!(b.take(1000).is_none());
        assert!(b.take(1001).is_some(), "another uid keeps its own budget");
        assert_eq!(metrics.streams_refused.load(Ordering::Relaxed), 1);
        drop(first);
        assert_eq!(b.held(1000), 0, "ended streams give their permits back");
        assert!(b.take(1000).is_some());
    }
}
