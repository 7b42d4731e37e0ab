//! The audit event: who did what to what, when, where, with what outcome (NIST SP 800-53
//! AU-3), plus free-form details. Producers build [`Event`]s; the writer turns them into
//! [`Record`]s with a sequence number and hashes.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

pub use crate::details::{Details, FlatObject};
use crate::error::{Error, Result};

/// The kinds esm itself writes. Kinds are open: any dotted lowercase name is accepted.
pub mod kind {
    pub const SVID_ISSUED: &str = "svid.issued";
    pub const SVID_ROTATED: &str = "svid.rotated";
    pub const CA_ROTATED: &str = "ca.rotated";
    pub const CA_INITIALIZED: &str = "ca.initialized";
    pub const ENTRY_CREATED: &str = "entry.created";
    pub const ENTRY_DELETED: &str = "entry.deleted";
    pub const AUTHZ_DECISION: &str = "authz.decision";
    pub const POLICY_CHANGED: &str = "policy.changed";
    pub const CONFIG_CHANGED: &str = "config.changed";
    /// Reserved, and not written: the signed checkpoints are rows of their own (what
    /// `esm report` reads for "checkpoints made on schedule"); an event per checkpoint would
    /// add nothing a signature does not prove, and would itself wait for the next one.
    pub const AUDIT_CHECKPOINT: &str = "audit.checkpoint";
    /// Events were dropped because the queue was full (`queue_full = "drop"`).
    pub const AUDIT_GAP: &str = "audit.gap";
    pub const AUDIT_RETENTION: &str = "audit.retention";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    Allow,
    Deny,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Success, Self::Failure, Self::Allow, Self::Deny]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// Longest kind name.
pub const MAX_KIND_LEN: usize = 64;
/// Longest actor, subject, action, reason, correlation id or node; longer ones are cut.
pub const MAX_FIELD_LEN: usize = 1024;
/// Largest canonical details; larger details are replaced by their size and SHA-256.
pub const MAX_DETAILS_LEN: usize = 16 * 1024;
/// Deepest nesting of details kept as is.
pub const MAX_DETAILS_DEPTH: usize = 32;

/// An event as a producer reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: OffsetDateTime,
    pub kind: String,
    /// Who: a SPIFFE ID or a local user (`uid:1000`, `cli:root`).
    pub actor: String,
    /// What was acted on: a SPIFFE ID, an entry id, a policy name, a path.
    pub subject: String,
    /// The operation: `issue`, `check`, `reload`, `rotate`, …
    pub action: String,
    pub outcome: Outcome,
    pub reason: String,
    /// Envoy's `x-request-id` for decisions; empty when there is none.
    pub correlation_id: String,
    /// Where: the site/node id.
    pub node: String,
    pub details: Details,
}

impl Event {
    /// An event of `kind` at the current time with empty fields, to fill in.
    pub fn new(kind: &str, outcome: Outcome) -> Self {
        Self {
            time: OffsetDateTime::now_utc(),
            kind: kind.to_owned(),
            actor: String::new(),
            subject: String::new(),
            action: String::new(),
            outcome,
            reason: String::new(),
            correlation_id: String::new(),
            node: String::new(),
            details: Details::default(),
        }
    }
}

/// An event as stored: every field in its canonical form, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// Nanoseconds since the Unix epoch, UTC.
    pub time_ns: i64,
    pub kind: String,
    pub actor: String,
    pub subject: String,
    pub action: String,
    pub outcome: String,
    pub reason: String,
    pub correlation_id: String,
    pub node: String,
    /// Canonical JSON (sorted keys, no spaces).
    pub details: String,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// The stored form of an event's fields before it has a place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub time_ns: i64,
    pub kind: String,
    pub actor: String,
    pub subject: String,
    pub action: String,
    pub outcome: String,
    pub reason: String,
    pub correlation_id: String,
    pub node: String,
    pub details: String,
}

/// Checks an event as [`prepare`] does, without preparing it; its time in nanoseconds.
pub fn check(e: &Event) -> Result<i64> {
    let kind_ok = !e.kind.is_empty()
        && e.kind.len() <= MAX_KIND_LEN
        && e.kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
    if !kind_ok {
        return Err(Error::InvalidEvent(format!(
            "kind {:?} is not a dotted lowercase name of at most {MAX_KIND_LEN} bytes",
            truncate(&e.kind)
        )));
    }
    i64::try_from(e.time.unix_timestamp_nanos())
        .map_err(|_| Error::InvalidEvent("time is out of range".into()))
}

/// Checks and bounds an event. `redact` replaces the values of sensitive detail keys.
pub fn prepare(e: Event, redact: &dyn Fn(&str) -> String) -> Result<Prepared> {
    let time_ns = check(&e)?;
    let details = match e.details {
        Details::Flat(o) => match o.into_text() {
            (text, true) if text.len() <= MAX_DETAILS_LEN => text,
            (text, _) => general_details(crate::details::parse(&text), redact),
        },
        Details::Json(v) => general_details(v, redact),
    };
    Ok(Prepared {
        time_ns,
        kind: e.kind,
        actor: truncate_owned(e.actor),
        subject: truncate_owned(e.subject),
        action: truncate_owned(e.action),
        outcome: e.outcome.as_str().to_owned(),
        reason: truncate_owned(e.reason),
        correlation_id: truncate_owned(e.correlation_id),
        node: truncate_owned(e.node),
        details,
    })
}

/// Redacts, then writes canonical JSON, or the size and hash of details too large to keep.
fn general_details(mut details: Value, redact: &dyn Fn(&str) -> String) -> String {
    redact_sensitive(&mut details, redact, 0);
    let mut canonical = String::new();
    if canonical_json(&details, &mut canonical, 0, MAX_DETAILS_LEN) {
        canonical
    } else {
        oversized_details(&details)
    }
}

fn truncate(s: &str) -> String {
    truncate_owned(s.to_owned())
}

/// Cuts a field to [`MAX_FIELD_LEN`] bytes at a character boundary, marking the cut.
/// Takes the string as it is when it fits (the common case: no copy).
fn truncate_owned(mut s: String) -> String {
    if s.len() <= MAX_FIELD_LEN {
        return s;
    }
    let mut end = MAX_FIELD_LEN - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str("...");
    s
}

fn oversized_details(v: &Value) -> String {
    if depth_exceeds(v, MAX_DETAILS_DEPTH) {
        return "{\"_omitted\":true,\"_reason\":\"nested too deep\"}".to_owned();
    }
    // The size and hash of what was left out, so the original can still be matched.
    let full = serde_json::to_vec(v).unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, &full);
    format!(
        "{{\"_omitted\":true,\"_bytes\":{},\"_sha256\":\"{}\"}}",
        full.len(),
        hex::encode(digest.as_ref())
    )
}

/// Whether `v` nests deeper than `max`, found without recursion.
fn depth_exceeds(v: &Value, max: usize) -> bool {
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        if d > max {
            return true;
        }
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    false
}

/// Detail keys whose values are never stored in clear.
pub(crate) const SENSITIVE_KEYS: [&str; 8] = [
    "authorization",
    "cookie",
    "set-cookie",
    "password",
    "private_key",
    "secret",
    "token",
    "x-api-key",
];

fn redact_sensitive(v: &mut Value, redact: &dyn Fn(&str) -> String, depth: usize) {
    if depth > MAX_DETAILS_DEPTH {
        return;
    }
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if SENSITIVE_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s)) {
                    let clear = match &*val {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    *val = Value::String(redact(&clear));
                } else {
                    redact_sensitive(val, redact, depth + 1);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|i| redact_sensitive(i, redact, depth + 1)),
        _ => {}
    }
}

/// Writes `v` as canonical JSON: object keys sorted by their UTF-8 bytes, no white space.
/// Returns false when the result would exceed `max` bytes or nest deeper than allowed.
pub fn canonical_json(v: &Value, out: &mut String, depth: usize, max: usize) -> bool {
    if depth > MAX_DETAILS_DEPTH || out.len() > max {
        return false;
    }
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_str(out, k);
                out.push(':');
                if !canonical_json(&map[k], out, depth + 1, max) {
                    return false;
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !canonical_json(item, out, depth + 1, max) {
                    return false;
                }
            }
            out.push(']');
        }
        Value::String(text) => push_json_str(out, text),
        scalar => {
            use std::fmt::Write;
            // Numbers, booleans and null: serde_json's own text, written in place.
            let _ = write!(out, "{scalar}");
        }
    }
    out.len() <= max
}

/// Appends `s` as a JSON string exactly as serde_json writes it. Most keys and values need
/// no escaping and are copied as they are; the others go through serde_json.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&Value::from(s).to_string());
    }
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
