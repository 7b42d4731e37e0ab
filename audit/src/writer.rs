//! The single writer: producers queue events on a bounded channel and never touch the disk;
//! the writer commits whatever has queued up as one transaction (group commit), extends the
//! hash chain and the Merkle frontier, signs a checkpoint every N events or T seconds, and
//! acknowledges each event only after its transaction committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::checkpoint::SigningKey;
use crate::checkpointer::Checkpointer;
use crate::error::{Error, Result};
use crate::event::{kind, prepare, Event, Outcome, Prepared, Record};
use crate::hash_chain::{link, unlink};
use crate::merkle::Hash;
use crate::redact::Redactor;
use crate::retry::{Retry, Stop};
pub use crate::sink::{AuditSink, LazyEvent, Receipt};
use crate::sink::{Job, Urgent};
use crate::store::{Db, WriteTx, WriterDb};
use crate::writer_chain::{load_chain, tail_or_anchor, Chain};

pub use crate::writer_options::{OnFull, WriterOptions};

pub use crate::writer_metrics::Metrics;

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

/// The writer thread's name.
pub const WRITER_THREAD: &str = "esm-audit";

/// How the writer tells a waiting producer its event's sequence number.
type Ack = oneshot::Sender<Result<u64>>;

/// Opens the chain where the store left it and starts the writer thread.
pub async fn start(
    db: Db,
    key: SigningKey,
    redactor: Redactor,
    opts: WriterOptions,
) -> Result<(AuditSink, WriterHandle)> {
    let mut tx = db.begin_write().await?;
    let loaded = load_chain(&mut tx, key.id()).await;
    // Nothing was written: the read transaction ends here whatever the chain said, so a
    // refused start leaves no transaction (or PostgreSQL lock) behind.
    tx.commit().await?;
    let chain = loaded?;
    let metrics = Arc::new(Metrics::default());
    metrics.last_seq.store(chain.seq, Ordering::Relaxed);
    metrics
        .last_checkpoint_ns
        .store(chain.last_checkpoint_ns, Ordering::Relaxed);
    let (jobs_tx, jobs_rx) = mpsc::channel(opts.queue_capacity.max(1));
    metrics.watch_queue(&jobs_tx);
    let urgent = Arc::new(Urgent::default());
    let pending_gap = Arc::new(AtomicU64::new(0));
    let sink = AuditSink {
        tx: jobs_tx,
        on_full: opts.on_full,
        pending_gap: pending_gap.clone(),
        metrics: metrics.clone(),
        urgent: urgent.clone(),
    };
    let (stop_tx, stop_rx) = oneshot::channel();
    // A writer that cannot reach its store is refused here, not discovered by the first
    // producer whose event goes nowhere.
    let own = db.for_writer()?;
    let writer = Writer {
        origin: db,
        db: own,
        stop: Stop::new(stop_rx),
        unconfirmed: None,
        checkpointer: Checkpointer::new(key, opts.checkpoint_interval),
        redactor,
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
    std::thread::Builder::new()
        .name(WRITER_THREAD.into())
        .spawn(move || {
            crate::background::lower_current_thread(writer.opts.nice);
            let ran = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Bug(format!("audit writer runtime: {e}")))
                .and_then(|rt| rt.block_on(writer.run()));
            let _ = done_tx.send(ran);
        })
        .map_err(|e| Error::Bug(format!("audit writer thread: {e}")))?;
    Ok((
        sink,
        WriterHandle {
            stop: Some(stop_tx),
            done,
        },
    ))
}

struct Writer {
    /// The store as opened; the writer's own connection is made from it (again, after a
    /// failure).
    origin: Db,
    db: WriterDb,
    stop: Stop,
    /// The first sequence number and the end (seq, hash) of an attempt whose COMMIT failed
    /// without saying whether it landed.
    unconfirmed: Option<(u64, (u64, Hash))>,
    checkpointer: Checkpointer,
    redactor: Redactor,
    opts: WriterOptions,
    chain: Chain,
    rx: mpsc::Receiver<Job>,
    pending_gap: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    urgent: Arc<Urgent>,
}

impl Writer {
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

    async fn run(mut self) -> Result<()> {
        let mut buf = Vec::with_capacity(self.opts.max_batch);
        while !self.stop.asked() {
            let deadline = self
                .checkpointer
                .not_before(self.chain.last_checkpoint + self.opts.checkpoint_interval);
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
                () = self.stop.wait() => {}
            }
        }
        // Everything queued before the stop is committed (or, with the store still
        // refusing after the grace period, given up and counted).
        self.rx.close();
        while let Some(job) = self.rx.recv().await {
            buf.push(job);
            if buf.len() >= self.opts.max_batch {
                let jobs = std::mem::take(&mut buf);
                self.commit(jobs, false).await;
            }
        }
        let jobs = std::mem::take(&mut buf);
        if !jobs.is_empty() || self.chain.since_checkpoint > 0 {
            self.commit(jobs, true).await;
        }
        Ok(())
    }

    /// Commits `jobs` (and a gap record, and a checkpoint when due) in one transaction. A
    /// batch the store refuses is rolled back (its connection is replaced, so no
    /// transaction is left open on it) and retried with backoff: it is never dropped while
    /// the writer runs. Meanwhile nothing else is taken from the queue, so the queue fills
    /// and `block` mode refuses new events — the request path fails closed until the store
    /// takes writes again.
    async fn commit(&mut self, jobs: Vec<Job>, force_checkpoint: bool) {
        let (mut events, acks) = self.prepare(jobs);
        let gap = self.pending_gap.swap(0, Ordering::Relaxed);
        let mut retry = Retry::new(self.opts.retry_for);
        self.unconfirmed = None;
        loop {
            let attempt = Instant::now();
            // As i64: an unsigned field reaches OTLP as a string.
            let span = tracing::info_span!("audit.commit", audit.events = events.len() as i64);
            let err = match tracing::Instrument::instrument(
                self.write(gap, events, force_checkpoint),
                span,
            )
            .await
            {
                Ok(first_seq) => {
                    self.metrics.commit_latency.observe(attempt.elapsed());
                    // Counted before anyone hears of the commit: the writer runs on its own
                    // thread, and a producer that was acknowledged must see it counted.
                    self.metrics.batches.fetch_add(1, Ordering::Relaxed);
                    if retry.attempts() > 0 {
                        self.metrics.retried_batches.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            audit.attempts = retry.attempts() + 1,
                            "audit store takes writes again"
                        );
                    }
                    self.metrics.store_failing.store(false, Ordering::Relaxed);
                    let offset = first_seq + u64::from(gap > 0);
                    for (i, ack) in acks.into_iter().enumerate() {
                        if let Some(ack) = ack {
                            let _ = ack.send(Ok(offset + i as u64));
                        }
                    }
                    return;
                }
                Err((e, back)) => {
                    events = back;
                    e
                }
            };
            self.metrics.failed_batches.fetch_add(1, Ordering::Relaxed);
            self.metrics.store_failing.store(true, Ordering::Relaxed);
            let Some(delay) = retry.next(self.stop.asked()) else {
                self.abandon(gap, err, acks);
                return;
            };
            tracing::error!(error = %err, audit.events = acks.len(), audit.retry_in_ms = delay.as_millis() as u64, "audit store refused a batch; retrying");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                () = self.stop.wait() => {}
            }
            self.reconnect();
        }
    }

    /// Makes, checks and bounds the queued events, here on the writer's thread rather than
    /// the producers'. One that cannot be recorded (a producer's bug: an invalid kind)
    /// fails its waiter, or — nobody waiting — is counted into the next gap record.
    fn prepare(&mut self, jobs: Vec<Job>) -> (Vec<Prepared>, Vec<Option<Ack>>) {
        let mut events = Vec::with_capacity(jobs.len());
        let mut acks = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.into_iter().enumerate() {
            crate::background::give_way(i);
            let mut e = job.event.into_event();
            if e.node.is_empty() {
                e.node.clone_from(&self.opts.node);
            }
            match prepare(e, &|v| self.redactor.redact(v)) {
                Ok(p) => {
                    events.push(p);
                    acks.push(job.ack);
                }
                Err(err) => {
                    tracing::error!(error = %err, "audit event refused");
                    match job.ack {
                        Some(ack) => {
                            let _ = ack.send(Err(err));
                        }
                        None => {
                            self.pending_gap.fetch_add(1, Ordering::Relaxed);
                            self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        (events, acks)
    }

    /// Gives a batch up (retry bound reached, or shutdown with the store still refusing):
    /// waiters hear the error; events nobody waits for — decisions already answered — are
    /// counted into the next gap record, so their loss is itself evidence.
    fn abandon(&mut self, gap: u64, err: Error, acks: Vec<Option<Ack>>) {
        let unheard = acks
            .iter()
            .filter(|a| a.as_ref().is_none_or(oneshot::Sender::is_closed))
            .count() as u64;
        tracing::error!(error = %err, audit.events = acks.len(), audit.unheard = unheard, "audit batch given up");
        self.metrics
            .abandoned
            .fetch_add(acks.len() as u64, Ordering::Relaxed);
        self.pending_gap.fetch_add(gap + unheard, Ordering::Relaxed);
        // Every waiter gets the store's own error as the source, not a copy of its text, so
        // a caller can still tell a full disk from a lost connection.
        let source = std::sync::Arc::new(err);
        for ack in acks.into_iter().flatten() {
            let _ = ack.send(Err(Error::GivenUp {
                source: source.clone(),
            }));
        }
    }

    /// A fresh writer connection after a failure. SQLite: a failed COMMIT is rolled back
    /// where it failed, but a connection that could not roll back still holds the write
    /// lock; replacing it closes it, which ends its transaction. PostgreSQL: the pool drops
    /// broken connections itself, and a new one is taken per transaction.
    fn reconnect(&mut self) {
        if let WriterDb::Sqlite(_) = self.db {
            // Before the new connection opens: the old one must not hold the write lock
            // while it is replaced, or for as long as reopening keeps failing.
            self.db.abandon();
            match self.origin.for_writer() {
                Ok(db) => self.db = db,
                Err(e) => tracing::warn!(error = %e, "audit writer cannot reconnect yet"),
            }
        }
    }

    /// One attempt at [`Writer::commit`]; on failure the events come back, unlinked, for
    /// the next attempt (which links them again: the chain may have moved meanwhile).
    async fn write(
        &mut self,
        gap: u64,
        events: Vec<Prepared>,
        force_checkpoint: bool,
    ) -> std::result::Result<u64, (Error, Vec<Prepared>)> {
        let mut tx = match self.begin_and_sync().await {
            Ok(tx) => tx,
            Err(e) => return Err((e, events)),
        };
        // A COMMIT whose answer was lost with the connection may have landed: then the log
        // now ends exactly where that attempt would have left it, and writing the events
        // again would record them twice.
        if let Some((first, end)) = self.unconfirmed.take() {
            if (self.chain.seq, self.chain.hash) == end {
                drop(tx);
                tracing::info!(
                    audit.seq = end.0,
                    "audit batch had committed before its connection dropped"
                );
                self.metrics
                    .appended
                    .fetch_add(end.0 + 1 - first, Ordering::Relaxed);
                self.metrics.last_seq.store(end.0, Ordering::Relaxed);
                return Ok(first);
            }
        }
        let gap_event = match (gap > 0).then(|| self.gap_event(gap)).transpose() {
            Ok(g) => g,
            Err(e) => return Err((e, events)),
        };
        let mut seq = self.chain.seq;
        let mut hash = self.chain.hash;
        let mut frontier = self.chain.frontier.clone();
        let records: Vec<Record> = gap_event
            .into_iter()
            .chain(events)
            .enumerate()
            .map(|(i, p)| {
                crate::background::give_way(i);
                let r = link(p, seq, hash);
                seq = r.seq;
                hash = r.hash;
                frontier.push(&r.hash);
                r
            })
            .collect();
        let first = self.chain.seq + 1;
        let since = self.chain.since_checkpoint + records.len() as u64;
        let due = since > 0
            && (force_checkpoint
                || since >= self.opts.checkpoint_every
                || self.chain.last_checkpoint.elapsed() >= self.opts.checkpoint_interval);
        let cp = if due && self.checkpointer.ready(force_checkpoint) {
            let root = frontier.root();
            let signed = self.checkpointer.sign(seq, root, hash, &self.metrics).await;
            signed.map(|cp| (cp, frontier.to_bytes()))
        } else {
            None
        };
        let checkpoint_ns = cp.as_ref().map(|(cp, _)| cp.time_ns);
        let stored = async {
            if !records.is_empty() {
                tx.insert(&records).await?;
            }
            if let Some((cp, bytes)) = &cp {
                tx.insert_checkpoint(cp, bytes).await?;
            }
            tx.commit().await
        };
        if let Err(e) = stored.await {
            self.unconfirmed = Some((first, (seq, hash)));
            let skip = usize::from(gap > 0);
            return Err((e, records.into_iter().skip(skip).map(unlink).collect()));
        }
        let appended = records.len() as u64;
        self.chain.seq = seq;
        self.chain.hash = hash;
        self.chain.frontier = frontier;
        if let Some(ns) = checkpoint_ns {
            self.chain.since_checkpoint = 0;
            self.chain.last_checkpoint = Instant::now();
            self.metrics.last_checkpoint_ns.store(ns, Ordering::Relaxed);
            self.metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
        } else {
            self.chain.since_checkpoint = since;
        }
        self.metrics.appended.fetch_add(appended, Ordering::Relaxed);
        self.metrics.last_seq.store(seq, Ordering::Relaxed);
        Ok(first)
    }

    /// A write transaction, with the chain caught up to the store: another writer (a CLI
    /// command, another node on PostgreSQL) may have appended.
    async fn begin_and_sync(&mut self) -> Result<WriteTx> {
        let mut tx = self.db.begin_write().await?;
        let tail = match tx.tail().await? {
            Some(t) => t,
            None => tail_or_anchor(None, tx.latest_checkpoint().await?.as_ref()),
        };
        if tail != (self.chain.seq, self.chain.hash) {
            tracing::debug!(audit.seq = tail.0, "audit log moved on; reloading chain");
            let key_id = self.checkpointer.key_id().to_owned();
            self.chain = load_chain(&mut tx, &key_id).await?;
        }
        Ok(tx)
    }

    /// The record of `gap` events that never reached the log.
    fn gap_event(&self, gap: u64) -> Result<Prepared> {
        let mut e = Event::new(kind::AUDIT_GAP, Outcome::Failure);
        e.actor = "esm-audit".into();
        e.action = "drop".into();
        e.node = self.opts.node.clone();
        e.reason = format!(
            "{gap} events were not recorded: the audit queue was full or the store refused them"
        );
        e.details = serde_json::json!({ "dropped": gap }).into();
        prepare(e, &|v| v.to_owned())
    }
}
