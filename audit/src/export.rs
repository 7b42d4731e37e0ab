//! JSON Lines export: one object per event with its hashes, so a SIEM can ingest it and a
//! third party can verify a full export offline with only the audit public key.
//!
//! A full export (no filter) also carries the retention anchor first (`{"anchor": …}`) and
//! each checkpoint right after the event it covers (`{"checkpoint": …}`). An export that
//! starts at an anchor verifies only if its events hold the signed retention statement that
//! removed exactly the events before it.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::checkpoint::{Checkpoint, PublicKey};
use crate::error::{Error, Result, Tampered};
use crate::event::Record;
use crate::store::{Db, Filter, StoredCheckpoint};
use crate::verify::{Report, Walker};

#[derive(Serialize, Deserialize)]
struct Line<'a> {
    seq: u64,
    time: String,
    time_ns: i64,
    kind: String,
    actor: String,
    subject: String,
    action: String,
    outcome: String,
    reason: String,
    correlation_id: String,
    node: String,
    #[serde(borrow)]
    details: &'a RawValue,
    prev_hash: String,
    hash: String,
}

#[derive(Serialize, Deserialize)]
struct AnchorLine {
    #[serde(flatten)]
    checkpoint: Checkpoint,
    frontier: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Meta {
    Anchor(AnchorLine),
    Checkpoint(Checkpoint),
}

/// RFC 3339 with nanoseconds, UTC.
pub fn time_text(time_ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| time_ns.to_string())
}

/// One event as a JSON line (without the newline).
pub fn record_line(r: &Record) -> Result<String> {
    let details = RawValue::from_string(r.details.clone()).map_err(|_| {
        Error::Tampered(Tampered {
            seq: r.seq,
            reason: "details are not JSON".into(),
        })
    })?;
    serde_json::to_string(&Line {
        seq: r.seq,
        time: time_text(r.time_ns),
        time_ns: r.time_ns,
        kind: r.kind.clone(),
        actor: r.actor.clone(),
        subject: r.subject.clone(),
        action: r.action.clone(),
        outcome: r.outcome.clone(),
        reason: r.reason.clone(),
        correlation_id: r.correlation_id.clone(),
        node: r.node.clone(),
        details: &details,
        prev_hash: hex::encode(r.prev_hash),
        hash: hex::encode(r.hash),
    })
    .map_err(|e| Error::Bug(e.to_string()))
}

fn io(e: std::io::Error) -> Error {
    Error::Io {
        path: "export output".into(),
        source: e,
    }
}

/// Writes matching events as JSON lines; returns how many.
pub async fn export(db: &Db, filter: &Filter, out: &mut dyn Write) -> Result<u64> {
    let full = filter.from_seq.is_none()
        && filter.to_seq.is_none()
        && filter.from_time_ns.is_none()
        && filter.to_time_ns.is_none()
        && filter.kind.is_none();
    let checkpoints: Vec<StoredCheckpoint> = if full {
        db.checkpoints().await?
    } else {
        Vec::new()
    };
    let mut after = 0;
    if full {
        if let Some(first) = db.first_seq().await?.filter(|f| *f > 1) {
            let anchor = first - 1;
            let a = checkpoints
                .iter()
                .find(|c| c.checkpoint.tree_size == anchor)
                .ok_or_else(|| {
                    Error::Tampered(crate::retention::gap(
                        first,
                        Some("and no checkpoint covers them"),
                    ))
                })?;
            let line = Meta::Anchor(AnchorLine {
                checkpoint: a.checkpoint.clone(),
                frontier: hex::encode(&a.frontier),
            });
            writeln!(
                out,
                "{}",
                serde_json::to_string(&line).map_err(|e| Error::Bug(e.to_string()))?
            )
            .map_err(io)?;
            after = anchor;
        }
    }
    let start = after;
    let mut cps = checkpoints
        .iter()
        .filter(|c| c.checkpoint.tree_size > start)
        .peekable();
    let mut n = 0;
    loop {
        let page = db.page(after, filter).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            writeln!(out, "{}", record_line(r)?).map_err(io)?;
            n += 1;
            while let Some(c) = cps.next_if(|c| c.checkpoint.tree_size <= r.seq) {
                let line = serde_json::to_string(&Meta::Checkpoint(c.checkpoint.clone()))
                    .map_err(|e| Error::Bug(e.to_string()))?;
                writeln!(out, "{line}").map_err(io)?;
            }
        }
    }
    out.flush().map_err(io)?;
    Ok(n)
}

fn parse_err(line_no: usize, e: impl std::fmt::Display) -> Error {
    Error::InvalidEvent(format!("export line {line_no}: {e}"))
}

/// Verifies a full export offline: every hash, link, checkpoint root and signature.
pub fn verify_export(input: &mut dyn BufRead, key: &PublicKey) -> Result<Report> {
    let mut walker: Option<Walker<'_>> = None;
    let mut line = String::new();
    let mut line_no = 0;
    loop {
        line.clear();
        if input.read_line(&mut line).map_err(io)? == 0 {
            break;
        }
        line_no += 1;
        let text = line.trim_end();
        if text.is_empty() {
            continue;
        }
        if let Ok(meta) = serde_json::from_str::<Meta>(text) {
            match meta {
                Meta::Anchor(a) if walker.is_none() => {
                    let frontier = hex::decode(&a.frontier).map_err(|e| parse_err(line_no, e))?;
                    let start = StoredCheckpoint {
                        checkpoint: a.checkpoint,
                        frontier,
                    };
                    walker = Some(Walker::after_retention(key, &start, [])?);
                }
                Meta::Anchor(_) => return Err(parse_err(line_no, "anchor after events")),
                Meta::Checkpoint(cp) => {
                    let w = walker
                        .as_mut()
                        .ok_or_else(|| parse_err(line_no, "checkpoint before any event"))?;
                    w.checkpoint_here(&cp)?;
                }
            }
            continue;
        }
        let l: Line<'_> = serde_json::from_str(text).map_err(|e| parse_err(line_no, e))?;
        let hash = |s: &str, what: &str| -> Result<[u8; 32]> {
            hex::decode(s)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| parse_err(line_no, format!("{what} is not a 32-byte hex hash")))
        };
        let r = Record {
            seq: l.seq,
            time_ns: l.time_ns,
            kind: l.kind,
            actor: l.actor,
            subject: l.subject,
            action: l.action,
            outcome: l.outcome,
            reason: l.reason,
            correlation_id: l.correlation_id,
            node: l.node,
            details: l.details.get().to_owned(),
            prev_hash: hash(&l.prev_hash, "prev_hash")?,
            hash: hash(&l.hash, "hash")?,
        };
        if walker.is_none() {
            walker = Some(Walker::new(key, None, [])?);
        }
        if let Some(w) = walker.as_mut() {
            w.push(&r.view())?;
        }
    }
    match walker {
        Some(w) => Ok(w.finish()?),
        None => Ok(Report::default()),
    }
}
