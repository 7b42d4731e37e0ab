//! Markdown: the same content as the JSON, laid out for people who diff reports in git.

use std::fmt::Write;

use super::{counts_text, seal_json};
use crate::model::{Report, Status};
use crate::seal::SEAL_MARK;

/// Escapes text from the log (SPIFFE IDs, reasons) so it cannot break a table or inject
/// markup.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' | '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn status(s: Status) -> String {
    if s.fails() {
        format!("**{}**", s.as_str())
    } else {
        s.as_str().to_owned()
    }
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# {} — compliance report\n", esc(&r.framework.name));
    if !r.integrity.verified {
        let _ = writeln!(
            o,
            "> **THE AUDIT LOG DOES NOT VERIFY:** {}. Every control that relies on the log fails.\n",
            esc(r.integrity.reason.as_deref().unwrap_or("unknown reason"))
        );
    }
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| Result | **{}** |", r.summary.result.to_uppercase());
    let _ = writeln!(
        o,
        "| Framework | {} (`{}`, version {}, {}) |",
        esc(&r.framework.name),
        esc(&r.framework.id),
        esc(&r.framework.version),
        esc(&r.framework.source)
    );
    let _ = writeln!(o, "| Period | {} to {} |", r.period.from, r.period.to);
    let _ = writeln!(o, "| Generated | {} |", r.generated_at);
    let _ = writeln!(o, "| esm version | {} |", esc(&r.esm_version));
    let _ = writeln!(o, "| Store | {} |", esc(&r.scope.store));
    let _ = writeln!(
        o,
        "| Trust domains | {} |",
        esc(&r.scope.trust_domains.join(", "))
    );
    let _ = writeln!(o, "| Nodes | {} |", esc(&r.scope.nodes.join(", ")));
    let seqs = match (r.scope.first_seq, r.scope.last_seq) {
        (Some(a), Some(b)) => format!(" (seq {a}–{b})"),
        _ => String::new(),
    };
    let _ = writeln!(
        o,
        "| Events in period | {}{seqs} |",
        r.scope.events_in_period
    );
    let _ = writeln!(o, "| Controls | {} |\n", counts_text(&r.summary.counts));

    let _ = writeln!(o, "## Integrity\n");
    let _ = writeln!(
        o,
        "- Log verified: **{}**{}",
        if r.integrity.verified { "yes" } else { "no" },
        r.integrity
            .reason
            .as_deref()
            .map(|x| format!(" — {}", esc(x)))
            .unwrap_or_default()
    );
    let _ = writeln!(o, "- Events verified: {}", r.integrity.events_verified);
    match &r.integrity.checkpoint {
        Some(c) => {
            let _ = writeln!(
                o,
                "- Checkpoint: tree size {}, signed {} by key `{}`\n  - root hash `{}`\n  - last hash `{}`\n  - signature `{}`",
                c.tree_size, c.time, c.key_id, c.root_hash, c.last_hash, c.signature
            );
        }
        None => {
            let _ = writeln!(o, "- Checkpoint: none");
        }
    }
    let _ = writeln!(
        o,
        "\nEvery sequence number below can be proven with `esm audit prove SEQ`.\n"
    );

    let _ = writeln!(
        o,
        "## Summary\n\n| Control | Title | Status |\n|---|---|---|"
    );
    for c in &r.controls {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            esc(&c.id),
            esc(&c.title),
            status(c.status)
        );
    }
    let _ = writeln!(o, "\n## Controls\n");
    for c in &r.controls {
        let _ = writeln!(
            o,
            "### {} {} — {}\n",
            esc(&c.id),
            esc(&c.title),
            status(c.status)
        );
        let _ = writeln!(o, "{}\n", esc(&c.statement));
        let _ = writeln!(o, "| Check | Status | Counts | Sample |\n|---|---|---|---|");
        for k in &c.checks {
            let sample = k
                .sample
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                o,
                "| `{}`: {} | {} | {} | {} |",
                k.id,
                esc(&k.description),
                status(k.status),
                counts_text(&k.counts),
                sample
            );
        }
        for k in c.checks.iter().filter(|k| !k.exceptions.is_empty()) {
            let total = k.counts.get("exceptions").copied().unwrap_or(0);
            let _ = writeln!(
                o,
                "\nExceptions of `{}` ({} of {total}):\n",
                k.id,
                k.exceptions.len()
            );
            for x in &k.exceptions {
                let _ = writeln!(o, "- {}", esc(&x.line()));
            }
        }
        o.push('\n');
    }
    parameters(&mut o, r);
    activity(&mut o, r);
    let _ = writeln!(o, "---\n\nDigest: `{}` (SHA-256 of this file with its 64 digits as zeros; `esm report verify FILE`)\n", r.digest);
    let _ = writeln!(o, "<!-- {SEAL_MARK} {} -->", seal_json(r));
    o
}

fn parameters(o: &mut String, r: &Report) {
    let p = &r.scope.parameters;
    let _ = writeln!(o, "## Parameters\n");
    let _ = writeln!(
        o,
        "- SVID maximum lifetime: {}",
        p.svid_max_ttl_secs
            .map_or("unknown".into(), |s| format!("{s} s"))
    );
    let _ = writeln!(o, "- Clock tolerance: {} s", p.clock_tolerance_secs);
    let _ = writeln!(
        o,
        "- Checkpoints: every {} events or {} s",
        p.checkpoint_every, p.checkpoint_interval_secs
    );
    let _ = writeln!(
        o,
        "- Denial spike: at least {} denials in an hour and {}× the period's hourly baseline; new pairs after the first {} h",
        p.spike_min_denials, p.spike_factor, p.baseline_hours
    );
    for f in &p.policies {
        let _ = writeln!(
            o,
            "- Policy `{}` from {}: {}",
            f.hash,
            esc(&f.source),
            if f.deny_by_default {
                "denies by default"
            } else {
                "does NOT deny by default"
            }
        );
    }
    o.push('\n');
}

fn activity(o: &mut String, r: &Report) {
    let a = &r.activity;
    let _ = writeln!(o, "## Activity\n\n| Day | Allowed | Denied | SVIDs issued | SVIDs renewed | CA rotations |\n|---|---|---|---|---|---|");
    for d in &a.days {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            d.date, d.allow, d.deny, d.issued, d.renewed, d.ca_rotations
        );
    }
    let _ = writeln!(o, "\n| SVID lifetime | SVIDs |\n|---|---|");
    for b in &a.lifetimes {
        let _ = writeln!(o, "| {} | {} |", b.label, b.count);
    }
    let _ = writeln!(
        o,
        "\n| Caller | Service | Allowed | Denied |\n|---|---|---|---|"
    );
    for e in &a.edges {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            esc(&e.caller),
            esc(&e.service),
            e.allow,
            e.deny
        );
    }
    o.push('\n');
}
