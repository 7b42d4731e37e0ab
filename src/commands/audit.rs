//! `esm audit …`: verification, export, tail, proofs and retention over the audit store.

use std::io::{BufReader, Write};
use std::path::Path;

use anyhow::Context;
use esm_audit::checkpoint::{load_public, PublicKey};
use esm_audit::prove::{ConsistencyProof, InclusionProof};
use esm_audit::store::{Db, Filter};
use esm_audit::{kind, Event, Outcome};
use time::OffsetDateTime;

use crate::cli::{AuditCommand, PublicKeyArg};
use crate::config::Config;
use crate::evidence::{cli_actor, open_db, record};
use crate::exit::usage;

/// A proof file is small; anything bigger is not one of ours.
const MAX_PROOF_LEN: u64 = 1 << 20;

pub fn run(cfg: &Config, command: AuditCommand) -> anyhow::Result<()> {
    if let AuditCommand::Verify {
        export: Some(path),
        key,
        ..
    } = &command
    {
        return verify_export(cfg, path, key);
    }
    if let AuditCommand::VerifyProof { file, key, .. } = &command {
        return verify_proof(cfg, file, key);
    }
    if let AuditCommand::Key { .. } = &command {
        print!(
            "{}",
            public_key(cfg, &PublicKeyArg { public_key: None })?.to_text()
        );
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let db = open_db(cfg).await?;
        let result = with_db(cfg, &db, command).await;
        db.close().await;
        result
    })
}

async fn with_db(cfg: &Config, db: &Db, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { from, key, .. } => {
            let key = public_key(cfg, &key)?;
            let r = esm_audit::verify::verify(db, &key, from).await?;
            println!(
                "ok: events {}..{} verify ({} events, {} checkpoints{}), key {}",
                r.first_seq,
                r.last_seq,
                r.events,
                r.checkpoints,
                r.anchor
                    .map(|a| format!(", anchored at {a} after retention"))
                    .unwrap_or_default(),
                key.id
            );
        }
        AuditCommand::Export {
            from,
            to,
            kind,
            out,
            ..
        } => {
            let filter = Filter {
                from_time_ns: from.as_deref().map(|d| instant("--from", d)).transpose()?,
                to_time_ns: to.as_deref().map(|d| instant("--to", d)).transpose()?,
                kind,
                ..Filter::default()
            };
            let n = match &out {
                Some(path) => {
                    let f = std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    let mut w = std::io::BufWriter::new(f);
                    let n = esm_audit::export::export(db, &filter, &mut w).await?;
                    w.into_inner()
                        .map_err(|e| e.into_error())
                        .and_then(|f| f.sync_all())
                        .with_context(|| format!("writing {}", path.display()))?;
                    n
                }
                None => {
                    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
                    esm_audit::export::export(db, &filter, &mut w).await?
                }
            };
            eprintln!("exported {n} events");
        }
        AuditCommand::Tail { lines, follow, .. } => tail(db, lines, follow).await?,
        AuditCommand::Prove { seq, .. } => {
            let proof = esm_audit::prove::prove_inclusion(db, seq).await?;
            println!("{}", serde_json::to_string_pretty(&proof)?);
        }
        AuditCommand::Consistency { old, new, .. } => {
            let proof = esm_audit::prove::prove_consistency(db, old, new).await?;
            println!("{}", serde_json::to_string_pretty(&proof)?);
        }
        AuditCommand::Retain { before, .. } => retain(cfg, db, &before).await?,
        AuditCommand::VerifyProof { .. } | AuditCommand::Key { .. } => {}
    }
    Ok(())
}

async fn tail(db: &Db, lines: u64, follow: bool) -> anyhow::Result<()> {
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
            writeln!(out, "{}", esm_audit::export::record_line(r)?)?;
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

async fn retain(cfg: &Config, db: &Db, before: &str) -> anyhow::Result<()> {
    let before_ns = instant("--before", before)?;
    let anchor = db.anchor().await?.unwrap_or(0);
    let Some(cp) = db
        .checkpoints()
        .await?
        .into_iter()
        .rfind(|c| c.checkpoint.time_ns < before_ns && c.checkpoint.tree_size > anchor)
    else {
        println!(
            "nothing to remove: no checkpoint signed before {before} beyond the current anchor"
        );
        return Ok(());
    };
    let up_to = cp.checkpoint.tree_size;
    let now = OffsetDateTime::now_utc();
    let removed = db.retain(up_to, now.unix_timestamp_nanos() as i64).await?;
    println!("removed {removed} events; the checkpoint at {up_to} is the new anchor");
    let mut e = Event::new(kind::AUDIT_RETENTION, Outcome::Success);
    e.actor = cli_actor();
    e.action = "retain".into();
    e.subject = format!("events 1..{up_to}");
    e.details =
        serde_json::json!({ "up_to_seq": up_to, "removed": removed, "before": before }).into();
    record(cfg, vec![e]).await?;
    Ok(())
}

pub(super) fn public_key(cfg: &Config, arg: &PublicKeyArg) -> anyhow::Result<PublicKey> {
    match &arg.public_key {
        Some(path) => {
            let text = super::read_text("", path, 4096)?;
            Ok(PublicKey::from_text(&text)
                .map_err(|e| usage(format!("{}: {e}", path.display())))?)
        }
        None => Ok(load_public(&cfg.audit_dir())
            .context("the audit log has no key yet (nothing was ever recorded?)")?),
    }
}

fn verify_export(cfg: &Config, path: &Path, key: &PublicKeyArg) -> anyhow::Result<()> {
    let key = public_key(cfg, key)?;
    let f = std::fs::File::open(path).map_err(|e| usage(format!("{}: {e}", path.display())))?;
    let r = esm_audit::export::verify_export(&mut BufReader::new(f), &key)?;
    println!(
        "ok: export {} holds events {}..{} ({} events, {} checkpoints), key {}",
        path.display(),
        r.first_seq,
        r.last_seq,
        r.events,
        r.checkpoints,
        key.id
    );
    Ok(())
}

fn verify_proof(cfg: &Config, file: &Path, key: &PublicKeyArg) -> anyhow::Result<()> {
    let key = public_key(cfg, key)?;
    let text = super::read_text("", file, MAX_PROOF_LEN)?;
    if let Ok(p) = serde_json::from_str::<InclusionProof>(&text) {
        p.verify(&key)?;
        println!(
            "ok: event {} is in the log of {} events signed at {}",
            p.seq,
            p.checkpoint.tree_size,
            esm_audit::export::time_text(p.checkpoint.time_ns)
        );
    } else if let Ok(p) = serde_json::from_str::<ConsistencyProof>(&text) {
        p.verify(&key)?;
        println!(
            "ok: the log of {} events extends the log of {} events",
            p.new.tree_size, p.old.tree_size
        );
    } else {
        return Err(usage(format!(
            "{}: neither an inclusion nor a consistency proof",
            file.display()
        )));
    }
    Ok(())
}

/// RFC 3339, or a bare date meaning its midnight UTC, as nanoseconds since the epoch.
pub fn instant(what: &str, s: &str) -> anyhow::Result<i64> {
    use time::format_description::well_known::Rfc3339;
    let t = OffsetDateTime::parse(s, &Rfc3339).or_else(|_| {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(s, &fmt).map(|d| d.midnight().assume_utc())
    });
    // Stored times are i64 nanoseconds (years 1677..2262); beyond that, saturate.
    t.map(|t| {
        let ns = t.unix_timestamp_nanos();
        i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
    })
    .map_err(|_| {
        usage(format!(
            "{what} {s:?}: expected RFC 3339 (2026-11-01T00:00:00Z) or a date (2026-11-01)"
        ))
    })
}
