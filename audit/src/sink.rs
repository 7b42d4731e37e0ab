//! The producers' side of the audit queue: events are checked here, on the producer's
//! thread, and queued for the single writer ([`crate::writer`]), which bounds, redacts and
//! writes them; a [`Receipt`] resolves once the event's transaction committed. A producer on
//! a hot path hands over a [`LazyEvent`] instead (what it decided, not yet an event) and,
//! when nobody waits for it, no receipt: the writer makes the event on its own thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::event::{check, Event};
use crate::writer::{Metrics, OnFull};

/// An event the writer makes itself, from what the producer handed over.
pub trait LazyEvent: Send + 'static {
    fn into_event(self: Box<Self>) -> Event;
}

/// An event as queued: checked, or still to be made.
pub(crate) enum Pending {
    /// Boxed: a queue slot stays the size of the lazy case, the hot path's.
    Checked(Box<Event>),
    Lazy(Box<dyn LazyEvent>),
}

impl Pending {
    pub(crate) fn into_event(self) -> Event {
        match self {
            Self::Checked(e) => *e,
            Self::Lazy(l) => l.into_event(),
        }
    }
}

pub(crate) struct Job {
    pub(crate) event: Pending,
    /// None: nobody waits for this event.
    pub(crate) ack: Option<oneshot::Sender<Result<u64>>>,
}

/// Wakes a lingering writer when an event someone waits for is queued.
#[derive(Default)]
pub(crate) struct Urgent(pub(crate) tokio::sync::Notify);

/// Resolves once the event is committed, with its sequence number.
pub struct Receipt(oneshot::Receiver<Result<u64>>);

impl Receipt {
    pub async fn committed(self) -> Result<u64> {
        self.0.await.map_err(|_| Error::Closed)?
    }
}

/// The producers' handle. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    pub(crate) tx: mpsc::Sender<Job>,
    pub(crate) on_full: OnFull,
    pub(crate) pending_gap: Arc<AtomicU64>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) urgent: Arc<Urgent>,
}

impl AuditSink {
    fn job(&self, e: Event) -> Result<(Job, Receipt)> {
        check(&e)?;
        Ok(Self::awaited(Pending::Checked(Box::new(e))))
    }

    fn awaited(event: Pending) -> (Job, Receipt) {
        let (ack, rx) = oneshot::channel();
        let job = Job {
            event,
            ack: Some(ack),
        };
        (job, Receipt(rx))
    }

    fn count_drop(&self) -> Error {
        self.pending_gap.fetch_add(1, Ordering::Relaxed);
        self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
        Error::QueueFull
    }

    /// Queues an event. With `OnFull::Block` waits for room; with `OnFull::Drop` a full
    /// queue drops (and counts) the event and returns [`Error::QueueFull`].
    pub async fn append(&self, e: Event) -> Result<Receipt> {
        let (job, receipt) = self.job(e)?;
        match self.on_full {
            OnFull::Block => self.tx.send(job).await.map_err(|_| Error::Closed)?,
            OnFull::Drop => match self.tx.try_send(job) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => return Err(self.count_drop()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::Closed),
            },
        }
        self.urgent.0.notify_one();
        Ok(receipt)
    }

    /// Queues an event without ever waiting: the request path's call. A full queue is
    /// [`Error::QueueFull`]; with `OnFull::Drop` the loss is counted into a gap record.
    pub fn try_append(&self, e: Event) -> Result<Receipt> {
        let (job, receipt) = self.job(e)?;
        self.try_send(job)?;
        Ok(receipt)
    }

    /// As [`AuditSink::try_append`] for an event nobody waits for, made by the writer: the
    /// producer pays for neither the event nor a receipt. One the writer cannot record (an
    /// invalid kind) is counted into a gap record.
    pub fn try_append_lazy(&self, e: Box<dyn LazyEvent>) -> Result<()> {
        self.try_send(Job {
            event: Pending::Lazy(e),
            ack: None,
        })
    }

    /// As [`AuditSink::try_append_lazy`], for a producer that waits for the receipt (see
    /// [`AuditSink::try_append_awaited`]).
    pub fn try_append_lazy_awaited(&self, e: Box<dyn LazyEvent>) -> Result<Receipt> {
        let (job, receipt) = Self::awaited(Pending::Lazy(e));
        self.try_send(job)?;
        self.urgent.0.notify_one();
        Ok(receipt)
    }

    fn try_send(&self, job: Job) -> Result<()> {
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => match self.on_full {
                OnFull::Drop => Err(self.count_drop()),
                OnFull::Block => Err(Error::QueueFull),
            },
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Closed),
        }
    }

    /// As [`AuditSink::try_append`], for a producer that will wait for the receipt (a
    /// decision answered only once it is on disk, `decision_log_mode = "sync"`): the writer
    /// commits at once instead of lingering, so concurrent waiters share one commit without
    /// each paying the linger.
    pub fn try_append_awaited(&self, e: Event) -> Result<Receipt> {
        let receipt = self.try_append(e)?;
        self.urgent.0.notify_one();
        Ok(receipt)
    }

    /// True when a full queue refuses events (`block`): a producer that cannot wait should
    /// then refuse the action it could not record.
    pub fn fails_closed(&self) -> bool {
        self.on_full == OnFull::Block
    }

    /// Appends and waits until the event is committed.
    pub async fn record(&self, e: Event) -> Result<u64> {
        self.append(e).await?.committed().await
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Events waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}
