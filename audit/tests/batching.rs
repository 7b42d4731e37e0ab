//! How the writer groups events into transactions: events nobody waits for linger so that
//! a stream of decisions costs a few commits a second, an awaited event never waits out the
//! linger, every batch size lands intact, and a batch the database refuses is counted in
//! the next gap record instead of vanishing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{event, writer, Backend};
use esm_audit::checkpoint::SigningKey;
use esm_audit::verify::verify;
use esm_audit::writer::LazyEvent;
use esm_audit::writer::WriterOptions;

fn lingering(linger: Duration) -> WriterOptions {
    WriterOptions {
        linger,
        node: "node-1".into(),
        ..Default::default()
    }
}

both_backends!(
    an_awaited_event_does_not_wait_out_the_linger,
    unawaited_events_commit_together_after_the_linger,
    batches_of_every_size_land_in_order_and_verify,
    lazy_events_are_made_by_the_writer_and_a_bad_one_is_a_gap,
);

async fn an_awaited_event_does_not_wait_out_the_linger(b: Backend) {
    let (sink, handle) = writer(
        b.open().await,
        SigningKey::ephemeral().unwrap(),
        lingering(Duration::from_secs(60)),
    )
    .await;
    let lazy = sink.try_append(event(0)).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    let seq = tokio::time::timeout(Duration::from_secs(10), sink.record(event(1)))
        .await
        .expect("the awaited event waited for the linger")
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    // The lingering event went with it, first.
    assert_eq!(lazy.committed().await.unwrap(), 1);
    assert_eq!(seq, 2);
    handle.shutdown().await.unwrap();
}

async fn unawaited_events_commit_together_after_the_linger(b: Backend) {
    let (sink, handle) = writer(
        b.open().await,
        SigningKey::ephemeral().unwrap(),
        lingering(Duration::from_millis(300)),
    )
    .await;
    let t = Instant::now();
    let receipts: Vec<_> = (0..50)
        .map(|i| sink.try_append(event(i)).unwrap())
        .collect();
    for (i, r) in receipts.into_iter().enumerate() {
        assert_eq!(r.committed().await.unwrap(), i as u64 + 1);
    }
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        sink.metrics()
            .batches
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "50 queued events are one transaction"
    );
    handle.shutdown().await.unwrap();
}

async fn batches_of_every_size_land_in_order_and_verify(b: Backend) {
    let key = SigningKey::ephemeral().unwrap();
    let public = key.public();
    let (sink, handle) = writer(b.open().await, key, lingering(Duration::ZERO)).await;
    // Sizes that cut into every INSERT size and their remainders.
    let mut next = 0u64;
    for size in [1u64, 3, 4, 17, 64, 255, 256, 257, 700] {
        let receipts: Vec<_> = (next..next + size)
            .map(|i| sink.try_append(event(i)).unwrap())
            .collect();
        for (i, r) in receipts.into_iter().enumerate() {
            assert_eq!(r.committed().await.unwrap(), next + i as u64 + 1);
        }
        next += size;
    }
    handle.shutdown().await.unwrap();
    let db = b.open().await;
    let mut seen = 0;
    loop {
        let page = db.page(seen, &Default::default()).await.unwrap();
        if page.is_empty() {
            break;
        }
        for r in &page {
            seen += 1;
            assert_eq!(r.seq, seen);
            assert_eq!(r.correlation_id, format!("req-{}", seen - 1));
        }
    }
    assert_eq!(seen, next);
    verify(&db, &public, None).await.unwrap();
}

#[tokio::test]
async fn a_batch_the_database_refuses_is_retried_until_it_is_taken() {
    let b = Backend::sqlite();
    let (sink, handle) = writer(
        b.open().await,
        SigningKey::ephemeral().unwrap(),
        lingering(Duration::ZERO),
    )
    .await;
    sink.record(event(0)).await.unwrap();
    b.tamper("ALTER TABLE events RENAME TO events_away").await;
    let waiting: Vec<_> = (1..6).map(|i| sink.try_append(event(i)).unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = sink.metrics();
    assert!(m.store_failing.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(m.appended.load(std::sync::atomic::Ordering::Relaxed), 1);
    b.tamper("ALTER TABLE events_away RENAME TO events").await;
    let mut seqs = Vec::new();
    for r in waiting {
        seqs.push(r.committed().await.unwrap());
    }
    assert_eq!(seqs, [2, 3, 4, 5, 6]);
    assert_eq!(sink.record(event(9)).await.unwrap(), 7);
    handle.shutdown().await.unwrap();
    assert_eq!(common::dropped_in_gaps(&b.open().await).await, 0);
}

/// A producer's decision handed over unmade: the writer makes the event.
struct Made(u64);

impl LazyEvent for Made {
    fn into_event(self: Box<Self>) -> esm_audit::Event {
        let mut e = event(self.0);
        if self.0 == 2 {
            // A producer's bug the writer finds only when it makes the event.
            e.kind = "Not A Kind".into();
        }
        e
    }
}

async fn lazy_events_are_made_by_the_writer_and_a_bad_one_is_a_gap(b: Backend) {
    let key = SigningKey::ephemeral().unwrap();
    let public = key.public();
    let (sink, handle) = writer(b.open().await, key, lingering(Duration::ZERO)).await;
    for i in 0..2 {
        sink.try_append_lazy(Box::new(Made(i))).unwrap();
    }
    // The bad one, nobody waiting: counted, then recorded as a gap with the next batch.
    sink.try_append_lazy(Box::new(Made(2))).unwrap();
    let waited = sink.try_append_lazy_awaited(Box::new(Made(3))).unwrap();
    let seq = waited.committed().await.unwrap();
    let bad = sink.try_append_lazy_awaited(Box::new(Made(2))).unwrap();
    assert!(matches!(
        bad.committed().await,
        Err(esm_audit::Error::InvalidEvent(_))
    ));
    handle.shutdown().await.unwrap();
    let db = b.open().await;
    let records = db.page(0, &Default::default()).await.unwrap();
    let made: Vec<&str> = records
        .iter()
        .filter(|r| r.kind == esm_audit::kind::AUTHZ_DECISION)
        .map(|r| r.correlation_id.as_str())
        .collect();
    assert_eq!(made, ["req-0", "req-1", "req-3"]);
    assert_eq!(records.len(), 4, "and one gap record");
    assert_eq!(records.last().map(|r| r.seq), Some(seq));
    // The writer filled in the node, as for events made by the producer.
    assert!(records.iter().all(|r| r.node == "node-1"));
    assert_eq!(common::dropped_in_gaps(&db).await, 1);
    verify(&db, &public, None).await.unwrap();
}
