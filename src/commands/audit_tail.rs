//! `esm audit tail`: the newest events, then (with `--follow`) new ones as they commit.
//!
//! On a terminal each event is one line a person reads; piped, or with `--json`, each is
//! the JSON line `esm audit export` writes, so scripts never parse the readable form.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};

use esm_audit::event::Record;
use esm_audit::store::{Db, Filter};

/// How `tail` writes an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Readable,
}

impl Format {
    /// JSON when asked for, or when stdout is not a terminal (a pipe, a file).
    pub fn pick(json: bool) -> Self {
        if json || !std::io::stdout().is_terminal() {
            Self::Json
        } else {
            Self::Readable
        }
    }
}

pub async fn tail(db: &Db, lines: u64, follow: bool, format: Format) -> anyhow::Result<()> {
    let last = db.last_seq().await?.unwrap_or(0);
    let mut after = last.saturating_sub(lines);
    loop {
        let page = db
            .page(
                after,
                &Filter {
                    from_seq: Some(after + 1),
                    ..Filter::default()
                },
            )
            .await?;
        let mut out = std::io::stdout().lock();
        for r in &page {
            match format {
                Format::Json => writeln!(out, "{}", esm_audit::export::record_line(r)?)?,
                Format::Readable => writeln!(out, "{}", readable_line(r))?,
            }
            after = r.seq;
        }
        out.flush()?;
        drop(out);
        if page.is_empty() || !follow && after >= last {
            if !follow {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
}

/// `TIME #SEQ KIND OUTCOME ACTOR -> SUBJECT ACTION [PATH] [id=…] [reason: …]`. Every field
/// came from outside (a workload's SPIFFE ID, a request's path or id), so control
/// characters are escaped: an event must not be able to drive the reader's terminal.
pub fn readable_line(r: &Record) -> String {
    let mut line = String::with_capacity(160);
    let _ = write!(
        line,
        "{} #{} {} {} {} -> {} {}",
        esm_audit::export::time_text(r.time_ns),
        r.seq,
        shown(&r.kind),
        shown(&r.outcome),
        shown(&r.actor),
        shown(&r.subject),
        shown(&r.action),
    );
    if let Some(path) = detail_path(&r.details) {
        let _ = write!(line, " {}", shown(&path));
    }
    if !r.correlation_id.is_empty() {
        let _ = write!(line, " id={}", shown(&r.correlation_id));
    }
    if !r.reason.is_empty() {
        let _ = write!(line, " reason: {}", shown(&r.reason));
    }
    line
}

/// A decision's request path, kept in its details.
fn detail_path(details: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(details).ok()?;
    v.get("path")?.as_str().map(str::to_owned)
}

/// The field as printed: `-` when empty, control characters escaped.
fn shown(field: &str) -> String {
    if field.is_empty() {
        return "-".into();
    }
    let mut s = String::with_capacity(field.len());
    for c in field.chars() {
        if c.is_control() {
            s.extend(c.escape_default());
        } else {
            s.push(c);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(actor: &str, details: &str) -> Record {
        Record {
            seq: 7,
            time_ns: 1_700_000_000_000_000_000,
            kind: "authz.decision".into(),
            actor: actor.into(),
            subject: "spiffe://example.org/server".into(),
            action: "GET api".into(),
            outcome: "deny".into(),
            reason: String::new(),
            correlation_id: "req-1".into(),
            node: String::new(),
            details: details.into(),
            prev_hash: [0; 32],
            hash: [0; 32],
        }
    }

    #[test]
    fn readable_line_names_who_did_what_to_whom() {
        let line = readable_line(&record("spiffe://example.org/web", r#"{"path":"/admin"}"#));
        assert_eq!(
            line,
            "2023-11-14T22:13:20Z #7 authz.decision deny spiffe://example.org/web -> \
             spiffe://example.org/server GET api /admin id=req-1"
        );
    }

    #[test]
    fn readable_line_escapes_terminal_control_characters() {
        let line = readable_line(&record("evil\u{1b}]0;owned\u{7}", "{}"));
        assert!(!line.chars().any(char::is_control), "{line}");
        assert!(line.contains(r"evil\u{1b}]0;owned\u{7}"), "{line}");
    }
}
