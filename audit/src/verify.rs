//! Verification: recompute every hash, every link, the Merkle root at every checkpoint and
//! every checkpoint signature, and name the first sequence number where anything is off.
//! A log that no longer starts at 1 verifies only from a signed retention statement that
//! covers exactly the missing events ([`crate::retention`]).
//! The walk itself is a pure state machine ([`Walker`]) fed from the store or an export.

use crate::checkpoint::{Checkpoint, PublicKey};
use crate::error::{Error, Result, Tampered};
use crate::event::kind;
use crate::hash_chain::GENESIS;
use crate::merkle::{Frontier, Hash};
use crate::retention;
use crate::store::{Db, RecordRef, ScanOptions, StoredCheckpoint};

/// What a successful verification covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub first_seq: u64,
    pub last_seq: u64,
    pub events: u64,
    pub checkpoints: u64,
    /// Events up to here were removed by retention; the anchor checkpoint vouches for them.
    pub anchor: Option<u64>,
    /// The sequence number of the signed retention statement that removed them.
    pub retention: Option<u64>,
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
    /// When the walk starts after removed events: the checkpoint it starts from, which a
    /// signed retention statement in the walked events must name.
    retained: Option<Checkpoint>,
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
            retained: None,
            report: Report {
                first_seq: seq + 1,
                last_seq: seq,
                ..Report::default()
            },
        })
    }

    /// Starts at `anchor`, the checkpoint over events that retention removed: the walk only
    /// succeeds if it meets the signed statement that removed exactly those.
    pub fn after_retention(
        key: &'k PublicKey,
        anchor: &StoredCheckpoint,
        checkpoints: impl IntoIterator<Item = Checkpoint>,
    ) -> Result<Self, Tampered> {
        let mut w = Self::new(key, Some(anchor), checkpoints)?;
        w.retained = Some(anchor.checkpoint.clone());
        w.report.anchor = Some(anchor.checkpoint.tree_size);
        Ok(w)
    }

    pub fn push(&mut self, r: &RecordRef<'_>) -> Result<(), Tampered> {
        let expected = self.seq + 1;
        if r.seq != expected {
            return Err(bad(
                expected,
                format!("event is missing (next stored is {})", r.seq),
            ));
        }
        if *r.prev_hash != self.hash {
            return Err(bad(
                r.seq,
                "link to the previous event is broken (deleted, inserted or reordered)",
            ));
        }
        if r.content_hash() != *r.hash {
            return Err(bad(
                r.seq,
                "event contents do not match its hash (modified)",
            ));
        }
        if r.kind == kind::AUDIT_RETENTION {
            // Every retention record must be a statement the key holder signed; the one
            // naming the walk's starting checkpoint accounts for the events before it.
            let st = retention::check_record(&r.to_record(), self.key)?;
            if self.retained.as_ref().is_some_and(|a| st.covers(a)) {
                self.report.retention.get_or_insert(r.seq);
            }
        }
        self.frontier.push(r.hash);
        self.seq = r.seq;
        self.hash = *r.hash;
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

    /// Ends the walk: a checkpoint beyond the last event means events were removed, and so
    /// does a start after retention that no signed statement accounted for.
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
        if let Some(a) = &self.retained {
            if self.report.retention.is_none() {
                return Err(retention::gap(a.tree_size + 1, None));
            }
        }
        Ok(self.report)
    }
}

/// Verifies the stored log from its start or, when it no longer starts at 1, from the
/// checkpoint a signed retention statement continues from; or from the last checkpoint
/// before `from`. The `retention_anchor` rows are not consulted: they are unsigned.
pub async fn verify(db: &Db, key: &PublicKey, from: Option<u64>) -> Result<Report> {
    let all = db.checkpoints().await?;
    let retained = match (db.first_seq().await?, all.last()) {
        (Some(first), _) if first > 1 => Some(retention::covering(db, key, first, &all).await?),
        (Some(_), _) | (None, None) => None,
        // Checkpoints but no events: retention always leaves its statement behind.
        (None, Some(last)) => {
            return Err(retention::gap(last.checkpoint.tree_size + 1, None).into());
        }
    };
    let floor = retained.as_ref().map_or(0, |(st, _)| st.anchor.tree_size);
    let wanted = from.unwrap_or(0).saturating_sub(1).max(floor);
    let resume = all
        .iter()
        .rfind(|c| c.checkpoint.tree_size <= wanted && c.checkpoint.tree_size > floor);
    // Checkpoints before the start cannot be recomputed, but their signatures still can.
    let start_size = resume.map_or(floor, |s| s.checkpoint.tree_size);
    for c in all.iter().filter(|c| c.checkpoint.tree_size < start_size) {
        if !c.checkpoint.verify(key) {
            return Err(bad(
                c.checkpoint.tree_size,
                "checkpoint signature does not verify (forged)",
            )
            .into());
        }
    }
    let later = all.iter().map(|c| c.checkpoint.clone());
    let mut walker = match (resume, &retained) {
        (Some(c), _) => Walker::new(key, Some(c), later)?,
        (None, Some((st, seq))) => {
            let anchor = st
                .start()
                .ok_or_else(|| bad(*seq, "retention statement is malformed"))?;
            Walker::after_retention(key, &anchor, later)?
        }
        (None, None) => Walker::new(key, None, later)?,
    };
    // Readers fetch and hash pages ahead while the walker links them ([`Db::scan`]); a gap
    // or an extra row inside a range still shows up as a broken sequence.
    let end = db.last_seq().await?.unwrap_or(0);
    let mut scan = db.scan(start_size, end, ScanOptions::default());
    while let Some(page) = scan.next().await {
        let page = page?;
        for r in page.iter() {
            walker.push(&r)?;
        }
        scan.recycle(page);
    }
    let mut report = walker.finish()?;
    if let Some((st, seq)) = retained {
        report.anchor = Some(st.anchor.tree_size);
        report.retention = Some(seq);
    }
    Ok(report)
}

impl From<Tampered> for Error {
    fn from(t: Tampered) -> Self {
        Error::Tampered(t)
    }
}
