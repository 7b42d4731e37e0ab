//! The single writer: producers queue events on a bounded channel and never touch the disk;
//! the writer commits whatever has queued up as one transaction (group commit), extends the
//! hash chain and the Merkle frontier, signs a checkpoint every N events or T seconds, and
//! acknowledges each event only after its transaction committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::checkpoint::SigningKey;
use crate::error::{Error, Result};
use crate::event::{kind, prepare, Event, Outcome, Prepared, Record};
use crate::hash_chain::{link, GENESIS};
use crate::merkle::{Frontier, Hash};
use crate::redact::Redactor;
use crate::store::{Db, WriteTx};

/// What producers get when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Wait for room; a producer that cannot wait fails closed (Vault's audit devices).
    Block,
    /// Drop the event, count it, and write one `audit.gap` record with the count.
    Drop,
}

#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub queue_capacity: usize,
    pub max_batch: usize,
    pub on_full: OnFull,
    pub checkpoint_every: u64,
    pub checkpoint_interval: Duration,
    /// After the first event of a small batch arrives, wait up to this long for more before
    /// committing: under a steady stream of decisions this turns thousands of small
    /// transactions (and fsyncs) per second into a few dozen larger ones. Only events
    /// nobody waits for linger ([`AuditSink::try_append`], the request path's decisions):
    /// an [`AuditSink::append`]ed event is committed at once, with whatever has queued.
    pub linger: Duration,
    /// This node's id, for events whose producer left `node` empty.
    pub node: String,
    /// The writer thread's nice value (0: the same priority as the request path); see
    /// [`crate::background`].
    pub nice: i32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            max_batch: 8_192,
            on_full: OnFull::Block,
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_secs(60),
            linger: Duration::from_millis(20),
            node: String::new(),
            nice: 10,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub appended: AtomicU64,
    pub dropped: AtomicU64,
    pub batches: AtomicU64,
    pub failed_batches: AtomicU64,
    pub checkpoints: AtomicU64,
    pub last_seq: AtomicU64,
}

struct Job {
    event: Prepared,
    ack: oneshot::Sender<Result<u64>>,
}

/// Wakes a lingering writer when an event someone waits for is queued.
#[derive(Default)]
struct Urgent(tokio::sync::Notify);

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
    tx: mpsc::Sender<Job>,
    on_full: OnFull,
    pending_gap: Arc<AtomicU64>,
    redactor: Arc<Redactor>,
    node: Arc<str>,
    metrics: Arc<Metrics>,
    urgent: Arc<Urgent>,
}

impl AuditSink {
    fn job(&self, mut e: Event) -> Result<(Job, Receipt)> {
        if e.node.is_empty() {
            e.node = self.node.to_string();
        }
        let event = prepare(e, &|v| self.redactor.redact(v))?;
        let (ack, rx) = oneshot::channel();
        Ok((Job { event, ack }, Receipt(rx)))
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
        match self.tx.try_send(job) {
            Ok(()) => Ok(receipt),
            Err(mpsc::error::TrySendError::Full(_)) => match self.on_full {
                OnFull::Drop => Err(self.count_drop()),
                OnFull::Block => Err(Error::QueueFull),
            },
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Closed),
        }
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

/// Stops the writer after it has committed everything queued and signed a final checkpoint.
pub struct WriterHandle {
    stop: Option<oneshot::Sender<()>>,
    done: oneshot::Receiver<Result<()>>,
}

impl WriterHandle {
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.done
            .await
            .map_err(|_| Error::Bug("audit writer thread panicked".into()))?
    }
}

struct Chain {
    seq: u64,
    hash: Hash,
    frontier: Frontier,
    since_checkpoint: u64,
    last_checkpoint: Instant,
}

/// The writer thread's name.
pub const WRITER_THREAD: &str = "esm-audit";

/// Opens the chain where the store left it and starts the writer thread.
pub async fn start(
    db: Db,
    key: SigningKey,
    redactor: Redactor,
    opts: WriterOptions,
) -> Result<(AuditSink, WriterHandle)> {
    let mut tx = db.begin_write().await?;
    let chain = load_chain(&mut tx).await?;
    tx.commit().await?;
    let metrics = Arc::new(Metrics::default());
    metrics.last_seq.store(chain.seq, Ordering::Relaxed);
    let (jobs_tx, jobs_rx) = mpsc::channel(opts.queue_capacity.max(1));
    let urgent = Arc::new(Urgent::default());
    let pending_gap = Arc::new(AtomicU64::new(0));
    let sink = AuditSink {
        tx: jobs_tx,
        on_full: opts.on_full,
        pending_gap: pending_gap.clone(),
        redactor: Arc::new(redactor),
        node: opts.node.clone().into(),
        metrics: metrics.clone(),
        urgent: urgent.clone(),
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    let writer = Writer {
        db,
        key,
        opts,
        chain,
        rx: jobs_rx,
        pending_gap,
        metrics,
        urgent,
    };
    // The writer gets a thread and a runtime of its own: hashing and binding a batch of
    // a few hundred decisions then never holds up a worker that answers Envoy. The thread
    // is named so that `top -H` and `perf` show what the evidence costs.
    let (done_tx, done) = oneshot::channel();
    let (ready_tx, ready) = oneshot::channel();
    std::thread::Builder::new()
        .name(WRITER_THREAD.into())
        .spawn(move || {
            crate::background::lower_current_thread(writer.opts.nice);
            let ran = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Bug(format!("audit writer runtime: {e}")))
                .and_then(|rt| rt.block_on(writer.on_own_thread(stop_rx, ready_tx)));
            let _ = done_tx.send(ran);
        })
        .map_err(|e| Error::Bug(format!("audit writer thread: {e}")))?;
    // A writer that cannot reach its store is refused here, not discovered by the first
    // producer whose event goes nowhere.
    ready
        .await
        .map_err(|_| Error::Bug("audit writer thread ended before it started".into()))??;
    Ok((
        sink,
        WriterHandle {
            stop: Some(stop_tx),
            done,
        },
    ))
}

/// The newest event, or — when retention removed every event — the checkpoint it kept,
/// whose `last_hash` the chain continues from.
fn tail_or_anchor(
    tail: Option<(u64, Hash)>,
    latest: Option<&crate::store::StoredCheckpoint>,
) -> (u64, Hash) {
    match (tail, latest) {
        (Some(t), _) => t,
        (None, Some(cp)) => (cp.checkpoint.tree_size, cp.checkpoint.last_hash),
        (None, None) => (0, GENESIS),
    }
}

/// Reads the tail and rebuilds the Merkle frontier from the latest checkpoint.
async fn load_chain(tx: &mut WriteTx) -> Result<Chain> {
    let latest = tx.latest_checkpoint().await?;
    let (seq, hash) = tail_or_anchor(tx.tail().await?, latest.as_ref());
    let (base, mut frontier) = match latest {
        Some(cp) => {
            let f =
                Frontier::from_bytes(cp.checkpoint.tree_size, &cp.frontier).ok_or_else(|| {
                    Error::Tampered(crate::Tampered {
                        seq: cp.checkpoint.tree_size,
                        reason: "checkpoint frontier is malformed".into(),
                    })
                })?;
            (cp.checkpoint.tree_size, f)
        }
        None => (0, Frontier::default()),
    };
    for h in tx.hashes_after(base).await? {
        frontier.push(&h);
    }
    if frontier.size() != seq {
        return Err(Error::Tampered(crate::Tampered {
            seq: frontier.size() + 1,
            reason: format!("log ends at {seq} but its events count {}", frontier.size()),
        }));
    }
    Ok(Chain {
        seq,
        hash,
        since_checkpoint: seq - base,
        frontier,
        last_checkpoint: Instant::now(),
    })
}

struct Writer {
    db: Db,
    key: SigningKey,
    opts: WriterOptions,
    chain: Chain,
    rx: mpsc::Receiver<Job>,
    pending_gap: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    urgent: Arc<Urgent>,
}

impl Writer {
    /// The writer thread's life: its own connection first (so the connection's worker
    /// inherits the thread's priority), reported through `ready`, then [`Writer::run`].
    async fn on_own_thread(
        mut self,
        stop: oneshot::Receiver<()>,
        ready: oneshot::Sender<Result<()>>,
    ) -> Result<()> {
        match self.db.for_writer().await {
            Ok(db) => self.db = db,
            Err(e) => {
                // `start` returns the error; there is nothing to run.
                let _ = ready.send(Err(e));
                return Ok(());
            }
        }
        let _ = ready.send(Ok(()));
        self.run(stop).await
    }

    /// Lets a small batch of events nobody waits for grow for up to `linger`, without waking
    /// per event: the writer sleeps and then takes what queued. An awaited event ends the
    /// wait at once (its `notify_one` leaves a permit if it was queued before the wait began;
    /// a permit left over from an earlier batch costs one early commit, nothing else).
    async fn linger(&mut self, buf: &mut Vec<Job>) {
        if self.opts.linger.is_zero() || buf.len() >= self.opts.max_batch / 8 {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.opts.linger) => {}
            _ = self.urgent.0.notified() => {}
        }
        while buf.len() < self.opts.max_batch {
            match self.rx.try_recv() {
                Ok(job) => buf.push(job),
                Err(_) => break,
            }
        }
    }

    async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Result<()> {
        let mut buf = Vec::with_capacity(self.opts.max_batch);
        loop {
            let deadline = self.chain.last_checkpoint + self.opts.checkpoint_interval;
            let due = self.chain.since_checkpoint > 0;
            tokio::select! {
                n = self.rx.recv_many(&mut buf, self.opts.max_batch) => {
                    if n == 0 {
                        break;
                    }
                    self.linger(&mut buf).await;
                    let jobs = std::mem::take(&mut buf);
                    self.commit(jobs, false).await;
                }
                _ = tokio::time::sleep_until(deadline), if due => {
                    self.commit(Vec::new(), true).await;
                }
                _ = &mut stop => {
                    self.rx.close();
                    while let Some(job) = self.rx.recv().await {
                        buf.push(job);
                        if buf.len() >= self.opts.max_batch {
                            let jobs = std::mem::take(&mut buf);
                            self.commit(jobs, false).await;
                        }
                    }
                    break;
                }
            }
        }
        let jobs = std::mem::take(&mut buf);
        if !jobs.is_empty() || self.chain.since_checkpoint > 0 {
            self.commit(jobs, true).await;
        }
        Ok(())
    }

    /// Commits `jobs` (and a gap record, and a checkpoint when due) in one transaction.
    async fn commit(&mut self, jobs: Vec<Job>, force_checkpoint: bool) {
        let gap = self.pending_gap.swap(0, Ordering::Relaxed);
        let (events, acks): (Vec<Prepared>, Vec<_>) =
            jobs.into_iter().map(|j| (j.event, j.ack)).unzip();
        match self.write(gap, events, force_checkpoint).await {
            Ok(first_seq) => {
                // Counted before anyone hears of the commit: the writer runs on its own
                // thread, and a producer that was acknowledged must see the batch counted.
                self.metrics.batches.fetch_add(1, Ordering::Relaxed);
                let offset = first_seq + u64::from(gap > 0);
                for (i, ack) in acks.into_iter().enumerate() {
                    let _ = ack.send(Ok(offset + i as u64));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = acks.len(), "audit batch failed; not acknowledged");
                self.metrics.failed_batches.fetch_add(1, Ordering::Relaxed);
                // What is not in the log is counted into the next gap record, so the loss
                // itself is evidence even where nobody waited for the events.
                self.pending_gap
                    .fetch_add(gap + acks.len() as u64, Ordering::Relaxed);
                let msg = e.to_string();
                for ack in acks {
                    let _ = ack.send(Err(Error::Database(msg.clone())));
                }
            }
        }
    }

    async fn write(
        &mut self,
        gap: u64,
        events: Vec<Prepared>,
        force_checkpoint: bool,
    ) -> Result<u64> {
        let mut tx = self.db.begin_write().await?;
        // Another writer (a CLI command, another node on PostgreSQL) may have appended.
        let tail = match tx.tail().await? {
            Some(t) => t,
            None => tail_or_anchor(None, tx.latest_checkpoint().await?.as_ref()),
        };
        if tail != (self.chain.seq, self.chain.hash) {
            tracing::debug!(audit.seq = tail.0, "audit log moved on; reloading chain");
            self.chain = load_chain(&mut tx).await?;
        }
        let mut seq = self.chain.seq;
        let mut hash = self.chain.hash;
        let mut frontier = self.chain.frontier.clone();
        let mut records: Vec<Record> = Vec::with_capacity(events.len() + 1);
        let mut push = |p: Prepared, records: &mut Vec<Record>| {
            let r = link(p, seq, hash);
            seq = r.seq;
            hash = r.hash;
            frontier.push(&r.hash);
            records.push(r);
        };
        if gap > 0 {
            let mut e = Event::new(kind::AUDIT_GAP, Outcome::Failure);
            e.actor = "esm-audit".into();
            e.action = "drop".into();
            e.node = self.opts.node.clone();
            e.reason = format!("{gap} events dropped: the audit queue was full");
            e.details = serde_json::json!({ "dropped": gap }).into();
            push(prepare(e, &|v| v.to_owned())?, &mut records);
        }
        for p in events {
            push(p, &mut records);
        }
        let first = self.chain.seq + 1;
        let since = self.chain.since_checkpoint + records.len() as u64;
        let checkpoint = since > 0
            && (force_checkpoint
                || since >= self.opts.checkpoint_every
                || self.chain.last_checkpoint.elapsed() >= self.opts.checkpoint_interval);
        let appended = records.len() as u64;
        if !records.is_empty() {
            tx.insert(records).await?;
        }
        if checkpoint {
            let now = OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
            let cp = self.key.sign(seq, frontier.root(), hash, now);
            tx.insert_checkpoint(&cp, &frontier.to_bytes()).await?;
        }
        tx.commit().await?;
        self.chain.seq = seq;
        self.chain.hash = hash;
        self.chain.frontier = frontier;
        if checkpoint {
            self.chain.since_checkpoint = 0;
            self.chain.last_checkpoint = Instant::now();
            self.metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
        } else {
            self.chain.since_checkpoint = since;
        }
        self.metrics.appended.fetch_add(appended, Ordering::Relaxed);
        self.metrics.last_seq.store(seq, Ordering::Relaxed);
        Ok(first)
    }
}
