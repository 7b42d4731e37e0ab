//! Signed retention: removing the oldest events is itself evidence.
//!
//! Before anything is removed, a retention statement — "the log now starts at `first_kept`
//! and continues from this signed checkpoint", with when and by whom — is signed with the
//! checkpoint key (whichever algorithm and backend it has) and appended to the log as an `audit.retention` event. Verification accepts
//! a log that no longer starts at 1 only when such a statement, valid under the key, covers
//! exactly the missing prefix; this is how transparency logs prune. The database row that
//! lets the triggers delete (`retention_anchor`) must point at the statement, but nothing
//! trusts that row: whoever can write the database can write rows, not signatures.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::checkpoint::{hex_bytes, Checkpoint, PublicKey, SigningKey};
use crate::error::{Error, Result, Tampered};
use crate::event::{kind, Event, Outcome, Record, MAX_FIELD_LEN};
use crate::merkle::Frontier;
use crate::store::{Db, Filter, StoredCheckpoint};
use crate::writer::AuditSink;

/// What an `audit.retention` event's details hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// The first event kept; every event before it is removed.
    pub first_kept: u64,
    /// The signed checkpoint over the removed events, which the kept chain continues from.
    pub anchor: Checkpoint,
    /// The anchor's Merkle frontier, so the tree can be continued without the removed events.
    #[serde(with = "hex_bytes")]
    pub frontier: Vec<u8>,
    pub time_ns: i64,
    /// Who removed them.
    pub actor: String,
    pub key_id: String,
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

impl Statement {
    /// The text that is signed. Its first line differs from a checkpoint's, so neither kind of
    /// signature can be passed off as the other.
    pub fn signed_text(first_kept: u64, anchor: &Checkpoint, time_ns: i64, actor: &str) -> String {
        format!(
            "esm audit retention v1\n{first_kept}\n{}\n{}\n{}\n{time_ns}\n{}\n",
            anchor.tree_size,
            STANDARD.encode(anchor.root),
            hex::encode(anchor.last_hash),
            serde_json::Value::from(actor),
        )
    }

    /// Signs a statement that events up to `anchor` are removed; a key in an HSM or vault
    /// signs on a blocking thread.
    pub async fn sign(
        key: &SigningKey,
        anchor: &StoredCheckpoint,
        time_ns: i64,
        actor: &str,
    ) -> Result<Self> {
        let (mut st, text) = Self::unsigned(key, anchor, time_ns, actor);
        st.signature = key.sign_bytes_async(text.into_bytes()).await?;
        Ok(st)
    }

    /// The statement without its signature, and the text to sign.
    fn unsigned(
        key: &SigningKey,
        anchor: &StoredCheckpoint,
        time_ns: i64,
        actor: &str,
    ) -> (Self, String) {
        let first_kept = anchor.checkpoint.tree_size + 1;
        let text = Self::signed_text(first_kept, &anchor.checkpoint, time_ns, actor);
        let st = Self {
            first_kept,
            anchor: anchor.checkpoint.clone(),
            frontier: anchor.frontier.clone(),
            time_ns,
            actor: actor.to_owned(),
            key_id: key.id().to_owned(),
            signature: Vec::new(),
        };
        (st, text)
    }

    /// Why the statement is not one the holder of `key` made, if it is not (a phrase that
    /// follows "retention statement").
    pub fn check(&self, key: &PublicKey) -> Result<(), &'static str> {
        if self.first_kept != self.anchor.tree_size + 1 {
            return Err("names a first kept event that does not follow its checkpoint");
        }
        let text = Self::signed_text(self.first_kept, &self.anchor, self.time_ns, &self.actor);
        if !key.verifies(&self.key_id, text.as_bytes(), &self.signature) {
            return Err("has a signature that does not verify (forged)");
        }
        if !self.anchor.verify(key) {
            return Err("names a checkpoint whose signature does not verify");
        }
        if self.start().is_none() {
            return Err("names a checkpoint frontier that does not match its root");
        }
        Ok(())
    }

    /// The checkpoint the kept chain starts from, if its frontier matches its root.
    pub fn start(&self) -> Option<StoredCheckpoint> {
        Frontier::from_bytes(self.anchor.tree_size, &self.frontier)
            .filter(|f| f.root() == self.anchor.root)
            .map(|_| StoredCheckpoint {
                checkpoint: self.anchor.clone(),
                frontier: self.frontier.clone(),
            })
    }

    /// Whether this statement is about removing exactly the events `anchor` covers.
    pub fn covers(&self, anchor: &Checkpoint) -> bool {
        self.first_kept == anchor.tree_size + 1
            && self.anchor.tree_size == anchor.tree_size
            && self.anchor.root == anchor.root
            && self.anchor.last_hash == anchor.last_hash
    }

    /// The `audit.retention` event that carries the statement.
    pub fn event(&self, reason: &str) -> Result<Event> {
        let details = serde_json::to_value(self).map_err(|e| Error::Bug(e.to_string()))?;
        let mut e = Event::new(kind::AUDIT_RETENTION, Outcome::Success);
        e.time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.time_ns))
            .map_err(|e| Error::Bug(format!("retention time: {e}")))?;
        e.actor = self.actor.clone();
        e.action = "retain".into();
        e.subject = format!("events 1..{}", self.anchor.tree_size);
        e.reason = reason.to_owned();
        e.details = details.into();
        Ok(e)
    }
}

/// The statement an `audit.retention` record carries, checked under `key`; anything else
/// in a record of that kind is tampering at its sequence number.
pub fn check_record(r: &Record, key: &PublicKey) -> Result<Statement, Tampered> {
    let bad = |why: &str| Tampered {
        seq: r.seq,
        reason: format!("retention statement {why}"),
    };
    let st: Statement =
        serde_json::from_str(&r.details).map_err(|_| bad("is not a signed statement"))?;
    st.check(key).map_err(bad)?;
    Ok(st)
}

/// Events `1..first - 1` are gone and nothing signed says why.
pub fn gap(first: u64, why: Option<&str>) -> Tampered {
    Tampered {
        seq: 1,
        reason: format!(
            "events 1..{} missing: no signed retention statement covers them{}",
            first - 1,
            why.map(|w| format!(" ({w})")).unwrap_or_default()
        ),
    }
}

/// Finds the signed statement that covers exactly the events before `first` (the first one
/// stored), and its sequence number. The checkpoint it continues from must also be the one
/// the store holds at that size.
pub async fn covering(
    db: &Db,
    key: &PublicKey,
    first: u64,
    stored: &[StoredCheckpoint],
) -> Result<(Statement, u64)> {
    let filter = Filter {
        kind: Some(kind::AUDIT_RETENTION.into()),
        ..Filter::default()
    };
    let mut why: Option<String> = None;
    let mut after = first - 1;
    loop {
        let page = db.page(after, &filter).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            match check_record(r, key) {
                Ok(st) if st.first_kept == first => {
                    let held = stored
                        .iter()
                        .any(|c| st.covers(&c.checkpoint) && c.checkpoint.verify(key));
                    if held {
                        return Ok((st, r.seq));
                    }
                    why = Some(format!(
                        "event {}: retention statement names a checkpoint at {} the store does not hold",
                        r.seq, st.anchor.tree_size
                    ));
                }
                Ok(st) => {
                    why.get_or_insert_with(|| {
                        format!(
                            "event {}: retention statement covers events 1..{}",
                            r.seq, st.anchor.tree_size
                        )
                    });
                }
                Err(t) => why = Some(format!("event {}: {}", r.seq, t.reason)),
            }
        }
    }
    Err(gap(first, why.as_deref()).into())
}

/// What [`retain`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    /// Events up to here are removed.
    pub up_to: u64,
    /// The sequence number of the signed statement saying so.
    pub statement_seq: u64,
    pub removed: u64,
}

/// Removes events up to the checkpoint at `up_to`: checks the whole log first (a statement
/// signed over a log already tampered with would launder the tampering), appends the signed
/// statement through `sink` and waits for its commit, then deletes.
pub async fn retain(
    db: &Db,
    key: &SigningKey,
    sink: &AuditSink,
    up_to: u64,
    actor: &str,
    reason: &str,
) -> Result<Retained> {
    if actor.len() > MAX_FIELD_LEN {
        return Err(Error::InvalidEvent(format!(
            "retention actor is longer than {MAX_FIELD_LEN} bytes"
        )));
    }
    crate::verify::verify(db, &key.public(), None).await?;
    let first = db.first_seq().await?.unwrap_or(1);
    if up_to < first {
        return Err(Error::Config(format!(
            "events up to {up_to} are already removed (the log starts at {first})"
        )));
    }
    let anchor = db
        .checkpoints()
        .await?
        .into_iter()
        .find(|c| c.checkpoint.tree_size == up_to)
        .ok_or_else(|| Error::Config(format!("there is no checkpoint at {up_to}")))?;
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
    let statement = Statement::sign(key, &anchor, now, actor).await?;
    let statement_seq = sink.record(statement.event(reason)?).await?;
    let removed = db.retain(up_to, statement_seq, now).await?;
    tracing::info!(
        audit.up_to = up_to,
        audit.statement_seq = statement_seq,
        audit.removed = removed,
        "audit retention: events removed under a signed statement"
    );
    Ok(Retained {
        up_to,
        statement_seq,
        removed,
    })
}

#[cfg(test)]
#[path = "retention_tests.rs"]
mod tests;
