//! A store that refuses writes loses nothing: the data dir on a small tmpfs is filled until
//! SQLite gets ENOSPC, and the writer must keep every refused batch, let the queue fill (so
//! `block` mode refuses new events and `drop` mode counts them), and commit everything by
//! itself once space is freed, with the chain still verifying. Needs root (mount).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod small_disk;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{dropped_in_gaps, event, writer};
use esm_audit::checkpoint::SigningKey;
use esm_audit::store::Db;
use esm_audit::verify::verify;
use esm_audit::writer::{OnFull, Receipt, WriterOptions};
use esm_audit::Error;
use small_disk::SmallDisk;

fn opts(on_full: OnFull) -> WriterOptions {
    WriterOptions {
        queue_capacity: 64,
        on_full,
        linger: Duration::from_millis(5),
        ..WriterOptions::default()
    }
}

async fn open(disk: &SmallDisk) -> Db {
    let url = format!("sqlite://{}", disk.path().join("audit.db").display());
    Db::open(&url, None).await.unwrap()
}

async fn resolved_within(r: Receipt, t: Duration) -> Option<esm_audit::Result<u64>> {
    tokio::time::timeout(t, r.committed()).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_blocks_new_events_and_commits_all_after_space_returns() {
    let disk = SmallDisk::new("8m");
    let keys = tempfile::tempdir().unwrap();
    let key = SigningKey::load_or_create(keys.path()).unwrap();
    let public = key.public();
    let db = open(&disk).await;
    let (sink, handle) = writer(db.clone(), key, opts(OnFull::Block)).await;
    common::append_n(&sink, 0, 10).await;

    let filler = disk.fill();
    let mut receipts = Vec::new();
    let mut refused = 0u64;
    for i in 10..10_000 {
        match sink.try_append(event(i)) {
            Ok(r) => receipts.push(r),
            Err(Error::QueueFull) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
        if refused > 100 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        refused > 100,
        "a full store must fill the queue and refuse new events"
    );
    let accepted = receipts.len();
    assert!(accepted >= 64, "the queue took {accepted}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.metrics().store_failing.load(Ordering::Relaxed));
    assert!(sink.metrics().failed_batches.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        sink.metrics().appended.load(Ordering::Relaxed),
        10,
        "nothing is committed while the disk is full"
    );

    std::fs::remove_file(&filler).unwrap();
    let back = Instant::now();
    let mut seqs = Vec::new();
    for r in receipts {
        let seq = resolved_within(r, Duration::from_secs(10))
            .await
            .expect("committed within 10 s of space returning")
            .unwrap();
        seqs.push(seq);
    }
    let took = back.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // Every accepted event has its own place, in order, right after the first ten.
    assert_eq!(seqs, (11..11 + accepted as u64).collect::<Vec<_>>());
    assert!(!sink.metrics().store_failing.load(Ordering::Relaxed));
    assert_eq!(dropped_in_gaps(&db).await, 0);
    drop(sink);
    handle.shutdown().await.unwrap();
    let report = verify(&db, &public, None).await.unwrap();
    assert_eq!(report.events, 10 + accepted as u64);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_mode_counts_exactly_what_the_full_store_cost() {
    let disk = SmallDisk::new("8m");
    let keys = tempfile::tempdir().unwrap();
    let key = SigningKey::load_or_create(keys.path()).unwrap();
    let public = key.public();
    let db = open(&disk).await;
    let (sink, handle) = writer(db.clone(), key, opts(OnFull::Drop)).await;
    common::append_n(&sink, 0, 5).await;
    let filler = disk.fill();
    let mut receipts = Vec::new();
    let mut dropped = 0u64;
    let mut i = 5;
    // Until the store has refused a batch and the queue has overflowed for a while.
    while !(sink.metrics().store_failing.load(Ordering::Relaxed) && dropped > 200) {
        assert!(i < 200_000, "the full disk never refused a batch");
        match sink.try_append(event(i)) {
            Ok(r) => receipts.push(r),
            Err(Error::QueueFull) => dropped += 1,
            Err(e) => panic!("unexpected {e}"),
        }
        i += 1;
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    std::fs::remove_file(&filler).unwrap();
    let accepted = receipts.len() as u64;
    for r in receipts {
        resolved_within(r, Duration::from_secs(10))
            .await
            .expect("committed after space returned")
            .unwrap();
    }
    drop(sink);
    handle.shutdown().await.unwrap();
    assert_eq!(
        dropped_in_gaps(&db).await,
        dropped,
        "the gap records count every drop"
    );
    let gaps = db
        .page(
            0,
            &esm_audit::store::Filter {
                kind: Some(esm_audit::kind::AUDIT_GAP.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .len() as u64;
    let report = verify(&db, &public, None).await.unwrap();
    assert_eq!(report.events, 5 + accepted + gaps);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_retry_reports_the_error_to_a_waiting_producer() {
    let disk = SmallDisk::new("8m");
    let keys = tempfile::tempdir().unwrap();
    let key = SigningKey::load_or_create(keys.path()).unwrap();
    let db = open(&disk).await;
    let o = WriterOptions {
        retry_for: Some(Duration::from_millis(500)),
        ..opts(OnFull::Block)
    };
    let (sink, handle) = writer(db.clone(), key, o).await;
    common::append_n(&sink, 0, 3).await;
    let filler = disk.fill();
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), sink.record(event(3)))
        .await
        .expect("a bounded retry answers");
    // The waiter hears the store's own error (the full disk), not just its text.
    let Err(Error::GivenUp { source }) = &r else {
        panic!("expected a given-up batch, got {r:?}");
    };
    assert!(
        matches!(**source, Error::Sqlite { .. } | Error::Sql { .. }),
        "{source:?}"
    );
    assert!(t.elapsed() >= Duration::from_millis(400));
    assert!(sink.metrics().abandoned.load(Ordering::Relaxed) >= 1);
    std::fs::remove_file(&filler).unwrap();
    // The store is usable again, and the abandoned event was someone's to retry: no gap.
    assert_eq!(sink.record(event(4)).await.unwrap(), 4);
    drop(sink);
    handle.shutdown().await.unwrap();
    assert_eq!(dropped_in_gaps(&db).await, 0);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_while_the_disk_stays_full() {
    let disk = SmallDisk::new("8m");
    let keys = tempfile::tempdir().unwrap();
    let key = SigningKey::load_or_create(keys.path()).unwrap();
    let db = open(&disk).await;
    let (sink, handle) = writer(db.clone(), key, opts(OnFull::Block)).await;
    common::append_n(&sink, 0, 3).await;
    let _filler = disk.fill();
    let waiting = sink.append(event(3)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let metrics = sink.metrics().clone();
    drop(sink);
    tokio::time::timeout(Duration::from_secs(15), handle.shutdown())
        .await
        .expect("shutdown ends within the grace period")
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_secs(4),
        "it retried for the grace period first"
    );
    assert!(
        waiting.committed().await.is_err(),
        "the waiter hears the loss"
    );
    assert_eq!(metrics.abandoned.load(Ordering::Relaxed), 1);
    db.close().await;
}
