//! One self-contained HTML file: inline CSS and SVG, no scripts that run and nothing
//! fetched from the network.

use std::fmt::Write;

use super::svg::{self, esc};
use super::{counts_text, seal_json};
use crate::model::{Day, Report, Status};
use crate::seal::SEAL_MARK;

const CSS: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:1100px}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 6px;text-align:left;vertical-align:top;font-size:14px}.failed,.insufficient_evidence{color:#fff;background:#c0392b}.passed{background:#d5f5d5}.manual{background:#fff3c4}.not_applicable{background:#eee}.alert{border:3px solid #c0392b;padding:1em;background:#fdecea;font-weight:bold}code{font-size:12px;word-break:break-all}section{margin-bottom:1.5em}";

fn status(s: Status) -> String {
    format!(r#"<span class="{0}">{0}</span>"#, s.as_str())
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:"><title>{} — compliance report</title><style>{CSS}</style></head><body>"#,
        esc(&r.framework.name)
    );
    let _ = write!(o, "<h1>{} — compliance report</h1>", esc(&r.framework.name));
    if !r.integrity.verified {
        let _ = write!(
            o,
            r#"<p class="alert" id="integrity-alert">THE AUDIT LOG DOES NOT VERIFY: {}. Every control that relies on the log fails.</p>"#,
            esc(r.integrity.reason.as_deref().unwrap_or("unknown reason"))
        );
    }
    let seqs = match (r.scope.first_seq, r.scope.last_seq) {
        (Some(a), Some(b)) => format!(" (seq {a}–{b})"),
        _ => String::new(),
    };
    let rows = [
        (
            "Result",
            format!("<b>{}</b>", r.summary.result.to_uppercase()),
        ),
        (
            "Framework",
            esc(&format!(
                "{} ({}, version {}, {})",
                r.framework.name, r.framework.id, r.framework.version, r.framework.source
            )),
        ),
        ("Period", format!("{} to {}", r.period.from, r.period.to)),
        ("Generated", r.generated_at.clone()),
        ("esm version", esc(&r.esm_version)),
        ("Store", esc(&r.scope.store)),
        ("Trust domains", esc(&r.scope.trust_domains.join(", "))),
        ("Nodes", esc(&r.scope.nodes.join(", "))),
        (
            "Events in period",
            format!("{}{seqs}", r.scope.events_in_period),
        ),
        ("Controls", esc(&counts_text(&r.summary.counts))),
    ];
    o.push_str("<table>");
    for (k, v) in rows {
        let _ = write!(o, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    o.push_str("</table>");
    integrity(&mut o, r);
    o.push_str("<h2>Summary</h2><table><tr><th>Control</th><th>Title</th><th>Status</th></tr>");
    for c in &r.controls {
        let _ = write!(
            o,
            r##"<tr><td><a href="#c-{id}">{id}</a></td><td>{}</td><td>{}</td></tr>"##,
            esc(&c.title),
            status(c.status),
            id = esc(&c.id)
        );
    }
    o.push_str("</table>");
    charts(&mut o, r);
    o.push_str("<h2>Controls</h2>");
    for c in &r.controls {
        let _ = write!(
            o,
            r#"<section id="c-{}"><h3>{} {} — {}</h3><p>{}</p><table><tr><th>Check</th><th>Status</th><th>Counts</th><th>Sample (seq)</th></tr>"#,
            esc(&c.id),
            esc(&c.id),
            esc(&c.title),
            status(c.status),
            esc(&c.statement)
        );
        for k in &c.checks {
            let sample = k
                .sample
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let _ = write!(
                o,
                "<tr><td><code>{}</code><br>{}</td><td>{}</td><td>{}</td><td>{sample}</td></tr>",
                esc(&k.id),
                esc(&k.description),
                status(k.status),
                esc(&counts_text(&k.counts))
            );
        }
        o.push_str("</table>");
        for k in c.checks.iter().filter(|k| !k.exceptions.is_empty()) {
            let total = k.counts.get("exceptions").copied().unwrap_or(0);
            let _ = write!(
                o,
                "<p>Exceptions of <code>{}</code> ({} of {total}):</p><ul>",
                esc(&k.id),
                k.exceptions.len()
            );
            for x in &k.exceptions {
                let _ = write!(o, "<li>{}</li>", esc(&x.line()));
            }
            o.push_str("</ul>");
        }
        o.push_str("</section>");
    }
    let _ = write!(
        o,
        "<hr><p>Digest: <code>{}</code> (SHA-256 of this file with its 64 digits as zeros; <code>esm report verify FILE</code>)</p>",
        esc(&r.digest)
    );
    // Data, not script: browsers do not run application/json.
    let _ = write!(
        o,
        "<script type=\"application/json\" id=\"{SEAL_MARK}\">{}</script>\n</body></html>\n",
        seal_json(r).replace('<', "\\u003c")
    );
    o
}

fn integrity(o: &mut String, r: &Report) {
    let _ = write!(
        o,
        "<h2>Integrity</h2><p>Log verified: <b>{}</b>{} — {} events verified. Every sequence number below can be proven with <code>esm audit prove SEQ</code>.</p>",
        if r.integrity.verified { "yes" } else { "no" },
        r.integrity.reason.as_deref().map(|x| format!(" ({})", esc(x))).unwrap_or_default(),
        r.integrity.events_verified
    );
    if let Some(c) = &r.integrity.checkpoint {
        let _ = write!(
            o,
            "<table><tr><th>Checkpoint tree size</th><td>{}</td></tr><tr><th>Signed</th><td>{}</td></tr><tr><th>Key id</th><td><code>{}</code></td></tr><tr><th>Root hash</th><td><code>{}</code></td></tr><tr><th>Last hash</th><td><code>{}</code></td></tr><tr><th>Signature</th><td><code>{}</code></td></tr></table>",
            c.tree_size, c.time, esc(&c.key_id), c.root_hash, c.last_hash, c.signature
        );
    }
}

fn charts(o: &mut String, r: &Report) {
    let a = &r.activity;
    o.push_str("<h2>Activity</h2><h3>Decisions per day (allowed, denied)</h3>");
    o.push_str(&svg::daily(
        "Decisions per day",
        &a.days,
        &[
            ("allowed", "#59a14f", |d: &Day| d.allow),
            ("denied", "#e15759", |d: &Day| d.deny),
        ],
    ));
    o.push_str("<h3>SVID issuances and rotations per day</h3>");
    o.push_str(&svg::daily(
        "SVID issuances and rotations per day",
        &a.days,
        &[
            ("SVIDs issued", "#4e79a7", |d: &Day| d.issued),
            ("SVIDs renewed", "#76b7b2", |d: &Day| d.renewed),
            ("CA rotations", "#f28e2b", |d: &Day| d.ca_rotations),
        ],
    ));
    o.push_str("<h3>SVID lifetimes</h3>");
    o.push_str(&svg::histogram("SVID lifetimes", &a.lifetimes));
    o.push_str("<h3>Service-to-service graph from decisions (top edges, denials in red)</h3>");
    o.push_str(&svg::graph(
        "Caller → service (top edges, denials in red)",
        &a.edges,
    ));
}
