//! A page of stored events as read: every text field of every row in one buffer, so reading
//! a row costs a copy of its bytes and no allocation per field. Both databases' readers
//! fill pages through [`PageBuilder`], which is also where a row that cannot be an event esm
//! wrote (text that is not UTF-8, a hash that is not 32 bytes) is reported as tampering at
//! its sequence number.
//!
//! UTF-8 is checked once per page, over all its text, rather than once per field: nine
//! short checks per row cost more in calls than in bytes. A field on its own is valid
//! exactly when the whole is valid and no field starts inside a character (with a
//! continuation byte), which each field is checked for as it comes.

use crate::error::{Error, Result, Tampered};
use crate::event::Record;
use crate::hash_chain;
use crate::merkle::Hash;

/// The text columns, in [`Record`] order (also their order in every SELECT).
pub(crate) const TEXT_FIELDS: [&str; 9] = [
    "kind",
    "actor",
    "subject",
    "action",
    "outcome",
    "reason",
    "correlation_id",
    "node",
    "details",
];

/// One stored event, borrowed from the page (or the [`Record`]) that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub seq: u64,
    pub time_ns: i64,
    pub kind: &'a str,
    pub actor: &'a str,
    pub subject: &'a str,
    pub action: &'a str,
    pub outcome: &'a str,
    pub reason: &'a str,
    pub correlation_id: &'a str,
    pub node: &'a str,
    pub details: &'a str,
    pub prev_hash: &'a Hash,
    pub hash: &'a Hash,
    /// The event's hash recomputed from the fields above and `prev_hash`, when the reader
    /// already did it (a scan hashes on its reader threads, beside the consumer).
    pub recomputed: Option<&'a Hash>,
}

impl RecordRef<'_> {
    pub fn fields(&self) -> [&str; 9] {
        [
            self.kind,
            self.actor,
            self.subject,
            self.action,
            self.outcome,
            self.reason,
            self.correlation_id,
            self.node,
            self.details,
        ]
    }

    /// The hash the event's fields give, computed now unless the reader already did.
    pub fn content_hash(&self) -> Hash {
        match self.recomputed {
            Some(h) => *h,
            None => hash_chain::event_hash(self.prev_hash, self.seq, self.time_ns, self.fields()),
        }
    }

    pub fn to_record(&self) -> Record {
        Record {
            seq: self.seq,
            time_ns: self.time_ns,
            kind: self.kind.to_owned(),
            actor: self.actor.to_owned(),
            subject: self.subject.to_owned(),
            action: self.action.to_owned(),
            outcome: self.outcome.to_owned(),
            reason: self.reason.to_owned(),
            correlation_id: self.correlation_id.to_owned(),
            node: self.node.to_owned(),
            details: self.details.to_owned(),
            prev_hash: *self.prev_hash,
            hash: *self.hash,
        }
    }
}

impl Record {
    pub fn view(&self) -> RecordRef<'_> {
        RecordRef {
            seq: self.seq,
            time_ns: self.time_ns,
            kind: &self.kind,
            actor: &self.actor,
            subject: &self.subject,
            action: &self.action,
            outcome: &self.outcome,
            reason: &self.reason,
            correlation_id: &self.correlation_id,
            node: &self.node,
            details: &self.details,
            prev_hash: &self.prev_hash,
            hash: &self.hash,
            recomputed: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Row {
    seq: u64,
    time_ns: i64,
    /// Where each text field ends in the page's text; the first starts at `start`.
    start: usize,
    ends: [usize; 9],
    prev_hash: Hash,
    hash: Hash,
}

/// Consecutive stored events (by sequence number), in order.
#[derive(Debug, Clone, Default)]
pub struct Page {
    text: String,
    rows: Vec<Row>,
    recomputed: Vec<Hash>,
}

impl Page {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn last_seq(&self) -> Option<u64> {
        self.rows.last().map(|r| r.seq)
    }

    pub fn get(&self, i: usize) -> Option<RecordRef<'_>> {
        let r = self.rows.get(i)?;
        let mut at = r.start;
        let f = r.ends.map(|end| {
            let s = self.text.get(at..end).unwrap_or_default();
            at = end;
            s
        });
        Some(RecordRef {
            seq: r.seq,
            time_ns: r.time_ns,
            kind: f[0],
            actor: f[1],
            subject: f[2],
            action: f[3],
            outcome: f[4],
            reason: f[5],
            correlation_id: f[6],
            node: f[7],
            details: f[8],
            prev_hash: &r.prev_hash,
            hash: &r.hash,
            recomputed: self.recomputed.get(i),
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = RecordRef<'_>> + '_ {
        (0..self.rows.len()).filter_map(|i| self.get(i))
    }

    pub fn to_records(&self) -> Vec<Record> {
        self.iter().map(|r| r.to_record()).collect()
    }

    /// Recomputes every event's hash from its fields, for [`RecordRef::recomputed`]. The
    /// fields are taken as the bytes between the row's ends, without building a
    /// [`RecordRef`] (verification reads every row this way, then once more to walk it).
    pub(crate) fn recompute_hashes(&mut self) {
        let mut enc = hash_chain::Encoder::default();
        let hashes: Vec<Hash> = self
            .rows
            .iter()
            .map(|r| row_hash(self.text.as_bytes(), r, &mut enc))
            .collect();
        self.recomputed = hashes;
    }
}

fn row_hash(text: &[u8], r: &Row, enc: &mut hash_chain::Encoder) -> Hash {
    let mut at = r.start;
    let fields = r.ends.map(|end| {
        let f = text.get(at..end).unwrap_or_default();
        at = end;
        f
    });
    enc.hash(&r.prev_hash, r.seq, r.time_ns, fields)
}

/// Fills a [`Page`] one row at a time: each field's start as it comes, the text as UTF-8
/// once at [`PageBuilder::finish`].
#[derive(Debug, Default)]
pub(crate) struct PageBuilder {
    page: Page,
    /// The page's text until [`PageBuilder::finish`] checks it is UTF-8.
    text: Vec<u8>,
    row: Option<Row>,
    field: usize,
    /// Set when each row is hashed as it completes, while its bytes are still in cache
    /// (a page is a few MiB: hashing it afterwards reads it back from memory).
    encoder: Option<hash_chain::Encoder>,
}

impl PageBuilder {
    pub fn with_capacity(rows: usize) -> Self {
        let mut page = Page::default();
        page.rows.reserve(rows);
        Self {
            page,
            text: Vec::with_capacity(rows * 256),
            row: None,
            field: 0,
            encoder: None,
        }
    }

    /// A builder that fills `spare`'s buffers again, when there is one: a page is a few MiB,
    /// and new ones cost the kernel's zeroing of fresh memory and every doubling's copy as
    /// they grow (a profile of `audit verify` put those at a tenth of its CPU).
    pub fn reusing(spare: Option<Page>, rows: usize) -> Self {
        let Some(mut page) = spare else {
            return Self::with_capacity(rows);
        };
        let mut text = std::mem::take(&mut page.text).into_bytes();
        text.clear();
        page.rows.clear();
        page.recomputed.clear();
        page.rows.reserve(rows);
        Self {
            page,
            text,
            row: None,
            field: 0,
            encoder: None,
        }
    }

    /// Hashes every row as it completes, for [`RecordRef::recomputed`] (what
    /// [`Page::recompute_hashes`] does for a whole page afterwards).
    pub fn hashing(mut self) -> Self {
        self.page.recomputed.reserve(self.page.rows.capacity());
        self.encoder = Some(hash_chain::Encoder::default());
        self
    }

    /// Starts the row of the event at `seq`.
    pub fn row(&mut self, seq: u64, time_ns: i64) {
        self.row = Some(Row {
            seq,
            time_ns,
            start: self.text.len(),
            ends: [0; 9],
            prev_hash: [0; 32],
            hash: [0; 32],
        });
        self.field = 0;
    }

    /// The row's next text field, as the database holds it.
    pub fn text(&mut self, bytes: &[u8]) -> Result<()> {
        let (seq, field) = (self.seq(), self.field);
        if bytes.first().is_some_and(|b| b & 0xC0 == 0x80) {
            return Err(not_utf8(seq, field));
        }
        self.text.extend_from_slice(bytes);
        let end = self.text.len();
        let row = self.row.as_mut().ok_or_else(|| bug("text before row"))?;
        *row.ends
            .get_mut(field)
            .ok_or_else(|| bug("more than nine text fields"))? = end;
        self.field += 1;
        Ok(())
    }

    /// Ends the row with its two hashes.
    pub fn hashes(&mut self, prev_hash: &[u8], hash: &[u8]) -> Result<()> {
        let seq = self.seq();
        if self.field != TEXT_FIELDS.len() {
            return Err(bug("row ended before its text fields"));
        }
        // Checked before the row is taken: a refused row stays half read, so that
        // [`PageBuilder::finish`] still checks its text and names bad UTF-8 first.
        let prev_hash = hash32(seq, "prev_hash", prev_hash)?;
        let hash = hash32(seq, "hash", hash)?;
        let mut row = self.row.take().ok_or_else(|| bug("hashes before row"))?;
        row.prev_hash = prev_hash;
        row.hash = hash;
        if let Some(enc) = self.encoder.as_mut() {
            self.page.recomputed.push(row_hash(&self.text, &row, enc));
        }
        self.page.rows.push(row);
        Ok(())
    }

    /// The sequence number of the row being read (for naming it in a finding).
    pub fn seq(&self) -> u64 {
        self.row.as_ref().map_or(0, |r| r.seq)
    }

    /// The rows completed so far (a row left half read is dropped), up to the first whose
    /// text is not UTF-8, which is then named. The fields a half-read row did complete are
    /// checked too: a row refused for something later (a short hash, a field that starts
    /// inside a character) is named by its first field that is not UTF-8, as a check per
    /// field would have named it.
    pub fn finish(self) -> (Page, Option<Error>) {
        let Self {
            mut page,
            mut text,
            row: pending,
            field: done,
            ..
        } = self;
        let complete = page.rows.last().map_or(0, |r| r.ends[8]);
        let pending = pending.map(|r| {
            let end = done.checked_sub(1).and_then(|f| r.ends.get(f).copied());
            (r.seq, r.ends, end.unwrap_or(r.start), done)
        });
        text.truncate(pending.as_ref().map_or(complete, |p| p.2.max(complete)));
        let (bad, mut text) = match String::from_utf8(text) {
            Ok(s) => (None, s.into_bytes()),
            Err(e) => (Some(e.utf8_error().valid_up_to()), e.into_bytes()),
        };
        let finding = match (bad, pending) {
            (None, _) => None,
            // In the half-read row: every completed row is kept.
            (Some(at), Some((seq, ends, _, done))) if at >= complete => {
                let completed = ends.get(..done).unwrap_or_default();
                Some(not_utf8(seq, completed.partition_point(|&end| end <= at)))
            }
            // The first completed row (and its field) whose text reaches past the valid part.
            (Some(at), _) => {
                let i = page.rows.partition_point(|r| r.ends[8] <= at);
                let Some(row) = page.rows.get(i) else {
                    return (Page::default(), Some(bug("invalid text outside every row")));
                };
                let named = not_utf8(row.seq, row.ends.partition_point(|&end| end <= at));
                text.truncate(row.start);
                page.rows.truncate(i);
                page.recomputed.truncate(i);
                Some(named)
            }
        };
        text.truncate(page.rows.last().map_or(0, |r| r.ends[8]));
        match String::from_utf8(text) {
            Ok(s) => page.text = s,
            Err(_) => return (Page::default(), Some(bug("valid text turned invalid"))),
        }
        (page, finding)
    }
}

fn not_utf8(seq: u64, field: usize) -> Error {
    let what = TEXT_FIELDS.get(field).copied().unwrap_or("text");
    tampered(seq, format!("{what} is not valid UTF-8"))
}

pub(crate) fn tampered(seq: u64, reason: impl Into<String>) -> Error {
    Error::Tampered(Tampered {
        seq,
        reason: reason.into(),
    })
}

fn bug(what: &str) -> Error {
    Error::Bug(format!("page builder: {what}"))
}

pub(crate) fn hash32(seq: u64, what: &str, v: &[u8]) -> Result<Hash> {
    v.try_into()
        .map_err(|_| tampered(seq, format!("{what} is {} bytes, not 32", v.len())))
}

#[cfg(test)]
#[path = "page_tests.rs"]
mod tests;
