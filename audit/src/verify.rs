//! Verification: recompute every hash, every link, the Merkle root at every checkpoint and
//! every checkpoint signature, and name the first sequence number where anything is off.
//! The walk itself is a pure state machine ([`Walker`]) fed from the store or an export.

use crate::checkpoint::{Checkpoint, PublicKey};
use crate::error::{Error, Result, Tampered};
use crate::event::Record;
use crate::hash_chain::{recompute, GENESIS};
use crate::merkle::{Frontier, Hash};
use crate::store::{Db, Filter, StoredCheckpoint, PAGE};

/// What a successful verification covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub first_seq: u64,
    pub last_seq: u64,
    pub events: u64,
    pub checkpoints: u64,
    /// Events up to here were removed by retention; the anchor checkpoint vouches for them.
    pub anchor: Option<u64>,
}

fn bad(seq: u64, reason: impl Into<String>) -> Tampered {
    Tampered {
        seq,
        reason: reason.into(),
    }
}

/// Walks records in sequence order from a trusted starting point.
pub struct Walker<'k> {
    key: &'k PublicKey,
    seq: u64,
    hash: Hash,
    frontier: Frontier,
    /// Checkpoints not yet reached, ascending.
    pending: std::collections::VecDeque<Checkpoint>,
    report: Report,
}

impl<'k> Walker<'k> {
    /// Starts at the genesis, or at `start` (a checkpoint whose signature and frontier are
    /// checked first). `checkpoints` are all checkpoints after the start.
    pub fn new(
        key: &'k PublicKey,
        start: Option<&StoredCheckpoint>,
        checkpoints: impl IntoIterator<Item = Checkpoint>,
    ) -> Result<Self, Tampered> {
        let (seq, hash, frontier) = match start {
            None => (0, GENESIS, Frontier::default()),
            Some(s) => {
                let cp = &s.checkpoint;
                if !cp.verify(key) {
                    return Err(bad(
                        cp.tree_size,
                        "anchor checkpoint signature does not verify",
                    ));
                }
                let f = Frontier::from_bytes(cp.tree_size, &s.frontier)
                    .filter(|f| f.root() == cp.root)
                    .ok_or_else(|| {
                        bad(
                            cp.tree_size,
                            "anchor checkpoint frontier does not match its root",
                        )
                    })?;
                (cp.tree_size, cp.last_hash, f)
            }
        };
        Ok(Self {
            key,
            seq,
            hash,
            frontier,
            pending: checkpoints
                .into_iter()
                .filter(|c| c.tree_size > seq)
                .collect(),
            report: Report {
                first_seq: seq + 1,
                last_seq: seq,
                anchor: start.map(|s| s.checkpoint.tree_size),
                ..Report::default()
            },
        })
    }

    pub fn push(&mut self, r: &Record) -> Result<(), Tampered> {
        let expected = self.seq + 1;
        if r.seq != expected {
            return Err(bad(
                expected,
                format!("event is missing (next stored is {})", r.seq),
            ));
        }
        if r.prev_hash != self.hash {
            return Err(bad(
                r.seq,
                "link to the previous event is broken (deleted, inserted or reordered)",
            ));
        }
        if recompute(r) != r.hash {
            return Err(bad(
                r.seq,
                "event contents do not match its hash (modified)",
            ));
        }
        self.frontier.push(&r.hash);
        self.seq = r.seq;
        self.hash = r.hash;
        self.report.events += 1;
        self.report.last_seq = r.seq;
        while self
            .pending
            .front()
            .is_some_and(|c| c.tree_size <= self.seq)
        {
            if let Some(cp) = self.pending.pop_front() {
                self.check_checkpoint(&cp)?;
            }
        }
        Ok(())
    }

    /// Checks a checkpoint that covers exactly the events pushed so far.
    pub fn checkpoint_here(&mut self, cp: &Checkpoint) -> Result<(), Tampered> {
        self.check_checkpoint(cp)
    }

    fn check_checkpoint(&mut self, cp: &Checkpoint) -> Result<(), Tampered> {
        if cp.tree_size != self.seq {
            return Err(bad(cp.tree_size, "checkpoint does not fall on an event"));
        }
        if !cp.verify(self.key) {
            return Err(bad(
                cp.tree_size,
                "checkpoint signature does not verify (forged)",
            ));
        }
        if cp.root != self.frontier.root() || cp.last_hash != self.hash {
            return Err(bad(
                cp.tree_size,
                "checkpoint does not match the events it covers",
            ));
        }
        self.report.checkpoints += 1;
        Ok(())
    }

    /// Ends the walk: a checkpoint beyond the last event means events were removed.
    pub fn finish(self) -> Result<Report, Tampered> {
        if let Some(cp) = self.pending.front() {
            return Err(bad(
                self.seq + 1,
                format!(
                    "events {}..={} are missing (a checkpoint covers them)",
                    self.seq + 1,
                    cp.tree_size
                ),
            ));
        }
        Ok(self.report)
    }
}

/// Verifies the stored log, from the start (or the retention anchor), or from the last
/// checkpoint before `from`.
pub async fn verify(db: &Db, key: &PublicKey, from: Option<u64>) -> Result<Report> {
    let all = db.checkpoints().await?;
    let anchor = db.anchor().await?;
    let floor = anchor.unwrap_or(0);
    let wanted = from.unwrap_or(0).saturating_sub(1).max(floor);
    let start = all
        .iter()
        .rfind(|c| c.checkpoint.tree_size <= wanted && c.checkpoint.tree_size >= floor)
        .filter(|c| c.checkpoint.tree_size > 0);
    if anchor.is_some() && start.map(|s| s.checkpoint.tree_size) != anchor && wanted == floor {
        return Err(bad(floor, "retention anchor has no checkpoint").into());
    }
    // Checkpoints before the start cannot be recomputed, but their signatures still can.
    let start_size = start.map_or(0, |s| s.checkpoint.tree_size);
    for c in all.iter().filter(|c| c.checkpoint.tree_size < start_size) {
        if !c.checkpoint.verify(key) {
            return Err(bad(
                c.checkpoint.tree_size,
                "checkpoint signature does not verify (forged)",
            )
            .into());
        }
    }
    let mut walker = Walker::new(key, start, all.iter().map(|c| c.checkpoint.clone()))?;
    // Pages are fixed seq ranges read ahead concurrently while the walker hashes the current
    // one; a gap or an extra row inside a range still shows up as a broken sequence.
    let end = db.last_seq().await?.unwrap_or(0);
    let mut next = start_size;
    let mut ahead = std::collections::VecDeque::new();
    loop {
        while ahead.len() < READ_AHEAD && next < end {
            let (db, from, to) = (db.clone(), next, (next + PAGE as u64).min(end));
            let range = Filter {
                to_seq: Some(to),
                ..Filter::default()
            };
            ahead.push_back(tokio::spawn(async move { db.page(from, &range).await }));
            next = to;
        }
        let Some(task) = ahead.pop_front() else { break };
        let page = task
            .await
            .map_err(|e| Error::Bug(format!("verify reader: {e}")))??;
        for r in &page {
            walker.push(r)?;
        }
    }
    Ok(walker.finish()?)
}

/// Pages read concurrently ahead of the walker.
const READ_AHEAD: usize = 3;

impl From<Tampered> for Error {
    fn from(t: Tampered) -> Self {
        Error::Tampered(t)
    }
}
