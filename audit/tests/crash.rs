//! Nothing acknowledged is lost: a child process appends at full speed and is killed with
//! SIGKILL; after a restart every event it was told is stored is there and the chain verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{event, Backend};
use esm_audit::checkpoint::SigningKey;
use esm_audit::redact::Redactor;
use esm_audit::store::Db;
use esm_audit::verify::verify;
use esm_audit::writer::{start, WriterOptions};

const CHILD: &str = "ESM_AUDIT_CRASH_CHILD";

/// The child: append forever, printing each acknowledged sequence number.
fn child(url: &str, schema: Option<String>, key_dir: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = Db::open(url, schema.as_deref()).await.unwrap();
        let key = SigningKey::load_or_create(std::path::Path::new(key_dir)).unwrap();
        let opts = WriterOptions {
            checkpoint_every: 500,
            ..Default::default()
        };
        let (sink, _handle) = start(db, key, Redactor::from_secret(&[1; 32]), opts)
            .await
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
        tokio::spawn(async move {
            while let Some(receipt) = rx.recv().await {
                let r: esm_audit::writer::Receipt = receipt;
                let seq = r.committed().await.unwrap();
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {seq}").unwrap();
                out.flush().unwrap();
            }
        });
        for i in 0.. {
            tx.send(sink.append(event(i)).await.unwrap()).await.unwrap();
        }
    });
}

fn run_crash(b: &Backend) {
    let key_dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "--include-ignored",
    ])
    .arg(if matches!(b, Backend::Sqlite(_)) {
        "sqlite_child"
    } else {
        "postgres_child"
    })
    .env(CHILD, "1")
    .env("ESM_CRASH_URL", b.url())
    .env("ESM_CRASH_SCHEMA", b.schema().unwrap_or(""))
    .env("ESM_CRASH_KEYS", key_dir.path())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(seq) = line.strip_prefix("ACK ") {
            acked.insert(seq.parse::<u64>().unwrap());
        }
        if acked.len() >= 20_000 || Instant::now() > deadline {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        acked.len() > 1000,
        "child acknowledged only {} events",
        acked.len()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = b.open().await;
        let public = esm_audit::checkpoint::load_public(key_dir.path()).unwrap();
        let report = verify(&db, &public, None).await.unwrap();
        let max = *acked.iter().next_back().unwrap();
        assert!(
            report.last_seq >= max,
            "acknowledged {max}, stored only up to {}",
            report.last_seq
        );
        assert_eq!(report.first_seq, 1);
        // Verification walked a gap-free chain from 1, so every acknowledged seq is present.
        assert!(report.checkpoints >= 1);
        // A writer restarted on the same store continues the chain.
        let key = SigningKey::load_or_create(key_dir.path()).unwrap();
        let (sink, handle) = start(
            db.clone(),
            key,
            Redactor::from_secret(&[1; 32]),
            WriterOptions::default(),
        )
        .await
        .unwrap();
        let seq = sink.record(event(0)).await.unwrap();
        assert_eq!(seq, report.last_seq + 1);
        handle.shutdown().await.unwrap();
        verify(&db, &public, None).await.unwrap();
    });
}

fn child_if_asked() -> bool {
    if std::env::var(CHILD).is_err() {
        return false;
    }
    let schema = std::env::var("ESM_CRASH_SCHEMA")
        .ok()
        .filter(|s| !s.is_empty());
    child(
        &std::env::var("ESM_CRASH_URL").unwrap(),
        schema,
        &std::env::var("ESM_CRASH_KEYS").unwrap(),
    );
    true
}

#[test]
#[ignore = "helper: runs only as the crash test's child process"]
fn sqlite_child() {
    child_if_asked();
}

#[test]
#[ignore = "helper: runs only as the crash test's child process"]
fn postgres_child() {
    child_if_asked();
}

#[test]
fn acknowledged_events_survive_sigkill_on_sqlite() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    run_crash(&Backend::sqlite());
}

#[test]
fn acknowledged_events_survive_sigkill_on_postgres() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    run_crash(&Backend::postgres());
}
