//! PostgreSQL restarted under load (`pg_ctlcluster … restart`, the machine's own server):
//! the batch whose connection dropped is retried on a new connection, so every event the
//! writer accepted is committed, and the chain verifies. Alone in its file: the restart
//! would break the other PostgreSQL tests' connections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{event, writer, Backend};
use esm_audit::checkpoint::SigningKey;
use esm_audit::verify::verify;
use esm_audit::writer::WriterOptions;

fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let st = std::process::Command::new("pg_ctlcluster")
        .arg("--skip-systemctl-redirect")
        .arg(&version)
        .args(["main", "restart"])
        .status()
        .unwrap();
    assert!(st.success(), "pg_ctlcluster restart failed");
}

/// Holds `EXCLUSIVE` on the events table until a writer's insert waits on it, then
/// terminates the waiting backend and releases the lock.
async fn terminate_writer_mid_transaction(schema: &str) {
    use sqlx::Connection;
    let mut locker = sqlx::PgConnection::connect(&common::pg_url())
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "SET search_path TO {schema}; BEGIN; LOCK TABLE events IN EXCLUSIVE MODE"
    ))
    .execute(&mut locker)
    .await
    .unwrap();
    let mut killer = sqlx::PgConnection::connect(&common::pg_url())
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let killed: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_all(&mut killer)
        .await
        .unwrap();
        if !killed.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "no writer waited on the lock");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    locker.close().await.unwrap();
    killer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_under_load_lose_no_accepted_event() {
    let b = Backend::postgres();
    let db = b.open().await;
    let keys = tempfile::tempdir().unwrap();
    let key = SigningKey::load_or_create(keys.path()).unwrap();
    let public = key.public();
    let opts = WriterOptions {
        linger: Duration::from_millis(5),
        ..WriterOptions::default()
    };
    let (sink, handle) = writer(db.clone(), key, opts).await;
    // Produces until the faults are over, however long the restarts take.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let sink = sink.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut receipts = Vec::new();
            let mut i = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                receipts.push(sink.append(event(i)).await.unwrap());
                i += 1;
                if i % 64 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            receipts
        })
    };
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        if round % 2 == 0 {
            tokio::task::spawn_blocking(restart_postgres).await.unwrap();
        } else {
            // What a restart does to a connection mid-transaction, made certain rather than
            // left to timing: a second session locks the events table, the writer's insert
            // waits on that lock inside its transaction, and that backend is terminated.
            let before = sink
                .metrics()
                .failed_batches
                .load(std::sync::atomic::Ordering::Relaxed);
            terminate_writer_mid_transaction(b.schema().unwrap()).await;
            let until = Instant::now() + Duration::from_secs(5);
            while sink
                .metrics()
                .failed_batches
                .load(std::sync::atomic::Ordering::Relaxed)
                == before
            {
                assert!(Instant::now() < until, "the terminated batch was not seen");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let receipts = producer.await.unwrap();
    let n = receipts.len() as u64;
    let mut seqs = Vec::with_capacity(receipts.len());
    for r in receipts {
        let seq = tokio::time::timeout(Duration::from_secs(20), r.committed())
            .await
            .expect("committed after the restart")
            .expect("no accepted event is refused");
        seqs.push(seq);
    }
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
    let failed = sink
        .metrics()
        .failed_batches
        .load(std::sync::atomic::Ordering::Relaxed);
    drop(sink);
    handle.shutdown().await.unwrap();
    let db = b.open().await;
    let report = verify(&db, &public, None).await.unwrap();
    assert_eq!(report.events, n);
    assert_eq!(common::dropped_in_gaps(&db).await, 0);
    assert!(
        failed >= 1,
        "the restart was seen by the writer ({n} events)"
    );
}
