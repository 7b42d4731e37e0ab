//! `esm audit …`: verification, export, tail, proofs and retention over the audit store.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::Path;

use anyhow::Context;
use esm_audit::checkpoint::{load_public, PublicKey};
use esm_audit::prove::{ConsistencyProof, InclusionProof};
use esm_audit::store::{Db, Filter};
use time::OffsetDateTime;

use crate::audit_store::{cli_actor, open_db, open_db_to_read, Evidence};
use crate::cli::{AuditCommand, PublicKeyArg};
use crate::exit::usage;
use esm_config::Config;

/// A proof file is small; anything bigger is not one of ours.
const MAX_PROOF_LEN: u64 = 1 << 20;

pub fn run(
    cfg: &Config,
    env: &BTreeMap<String, String>,
    command: AuditCommand,
) -> anyhow::Result<()> {
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
    if let AuditCommand::Key { pem, .. } = &command {
        let key = public_key(cfg, &PublicKeyArg { public_key: None })?;
        print!("{}", if *pem { key.to_pem() } else { key.to_text() });
        return Ok(());
    }
    // Two workers: verification decodes and hashes pages beside the walk.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let db = match command {
            AuditCommand::Retain { .. } => open_db(cfg).await?,
            _ => open_db_to_read(cfg).await?,
        };
        let result = with_db(cfg, env, &db, command).await;
        db.close().await;
        result
    })
}

async fn with_db(
    cfg: &Config,
    env: &BTreeMap<String, String>,
    db: &Db,
    command: AuditCommand,
) -> anyhow::Result<()> {
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
                match (r.anchor, r.retention) {
                    (Some(a), Some(s)) =>
                        format!(", anchored at {a} after retention signed in event {s}"),
                    _ => String::new(),
                },
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
                    // Whole or not at all: an export cut short must not pass for the log.
                    let f = esm_audit::durable_file::Staged::create(path, 0o600)
                        .with_context(|| format!("creating {}", path.display()))?;
                    let mut w = std::io::BufWriter::new(f);
                    let n = esm_audit::export::export(db, &filter, &mut w).await?;
                    w.into_inner()
                        .map_err(|e| e.into_error())
                        .and_then(|f| f.commit())
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
        AuditCommand::Tail {
            lines,
            follow,
            json,
            ..
        } => {
            let format = super::audit_tail::Format::pick(json);
            super::audit_tail::tail(db, lines, follow, format).await?;
        }
        AuditCommand::Prove { seq, .. } => {
            let proof = esm_audit::prove::prove_inclusion(db, seq).await?;
            println!("{}", serde_json::to_string_pretty(&proof)?);
        }
        AuditCommand::Consistency { old, new, .. } => {
            let proof = esm_audit::prove::prove_consistency(db, old, new).await?;
            println!("{}", serde_json::to_string_pretty(&proof)?);
        }
        AuditCommand::Retain { before, .. } => retain(cfg, env, db, &before).await?,
        AuditCommand::VerifyProof { .. } | AuditCommand::Key { .. } => {}
    }
    Ok(())
}

/// Removes events up to the last checkpoint signed before `before`, under a retention
/// statement signed with the checkpoint key and appended to the log first.
async fn retain(
    cfg: &Config,
    env: &BTreeMap<String, String>,
    db: &Db,
    before: &str,
) -> anyhow::Result<()> {
    let before_ns = instant("--before", before)?;
    let first = db.first_seq().await?.unwrap_or(1);
    let Some(cp) = db
        .checkpoints()
        .await?
        .into_iter()
        .rfind(|c| c.checkpoint.time_ns < before_ns && c.checkpoint.tree_size >= first)
    else {
        println!(
            "nothing to remove: no checkpoint signed before {before} beyond the current anchor"
        );
        return Ok(());
    };
    let up_to = cp.checkpoint.tree_size;
    let key = crate::audit_store::open_key(cfg, env).await?;
    let evidence = Evidence::with_key(cfg, key.clone()).await?;
    let reason = format!("retention of events before {before}");
    let done =
        esm_audit::retention::retain(db, &key, &evidence.sink, up_to, &cli_actor(), &reason).await;
    evidence.shutdown().await?;
    let done = done.context("removing old audit events")?;
    println!(
        "removed {} events; the checkpoint at {up_to} is the new anchor, \
         vouched for by the signed retention statement at event {}",
        done.removed, done.statement_seq
    );
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
