//! Scans (the read path of verification and reports) on SQLite and PostgreSQL: pages come
//! back whole and in order whatever the number of readers, a consumer may stop early, and a
//! row that cannot be an event stops the scan after the rows before it, so the first bad
//! sequence number is still the one named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use common::{append_n, writer, Backend};
use esm_audit::checkpoint::{PublicKey, SigningKey};
use esm_audit::store::{Db, Filter, ScanOptions};
use esm_audit::verify::Walker;
use esm_audit::writer::WriterOptions;
use esm_audit::Error;

/// A log of 100 events with checkpoints every 10, and its public key.
async fn filled(b: &Backend) -> PublicKey {
    let key = SigningKey::ephemeral().unwrap();
    let public = key.public();
    let o = WriterOptions {
        checkpoint_every: 10,
        node: "node-1".into(),
        ..Default::default()
    };
    let (sink, handle) = writer(b.open().await, key, o).await;
    append_n(&sink, 0, 100).await;
    handle.shutdown().await.unwrap();
    public
}

fn opts(lanes: usize, page: u64) -> ScanOptions {
    ScanOptions {
        lanes,
        hashes: true,
        page,
        pg_copy: true,
    }
}

/// Walks a scan of the whole log from the genesis, as `verify` does.
async fn walk(db: &Db, key: &PublicKey, o: ScanOptions) -> Result<u64, Error> {
    let cps = db.checkpoints().await?.into_iter().map(|c| c.checkpoint);
    let mut w = Walker::new(key, None, cps)?;
    let mut scan = db.scan(0, db.last_seq().await?.unwrap_or(0), o);
    while let Some(page) = scan.next().await {
        let page = page?;
        for r in page.iter() {
            w.push(&r)?;
        }
        scan.recycle(page);
    }
    Ok(w.finish()?.events)
}

async fn expect_tampered_at(db: &Db, key: &PublicKey, seq: u64) {
    for o in [opts(1, 7), opts(3, 7), opts(2, 64)] {
        match walk(db, key, o).await {
            Err(Error::Tampered(t)) => assert_eq!(t.seq, seq, "{o:?}: {t}"),
            other => panic!("{o:?}: expected tampering at {seq}, got {other:?}"),
        }
    }
}

both_backends!(
    scans_return_every_event_in_order_whatever_the_readers,
    a_scan_dropped_early_stops_its_readers,
    a_scan_of_a_range_with_a_hole_returns_what_is_there,
    an_unreadable_row_is_named_after_an_earlier_break_in_another_reader,
);

async fn scans_return_every_event_in_order_whatever_the_readers(b: Backend) {
    let key = filled(&b).await;
    let db = b.open().await;
    let all = db
        .page(
            0,
            &Filter {
                to_seq: Some(100),
                ..Filter::default()
            },
        )
        .await
        .unwrap();
    for o in [opts(1, 100), opts(2, 7), opts(3, 1), opts(4, 33)] {
        let mut scan = db.scan(0, 100, o);
        let mut got = Vec::new();
        while let Some(page) = scan.next().await {
            let page = page.unwrap();
            assert!(page.len() as u64 <= o.page);
            for r in page.iter() {
                assert_eq!(r.recomputed, Some(r.hash), "hashed by the reader");
                got.push(r.to_record());
            }
            // Refilled pages (the last one shorter) must hold nothing of their last use.
            scan.recycle(page);
        }
        assert_eq!(got, all, "{o:?}");
        assert_eq!(walk(&db, &key, o).await.unwrap(), 100);
        // PostgreSQL's two readers (COPY and SELECT) see the same log.
        let select = ScanOptions {
            pg_copy: false,
            ..o
        };
        assert_eq!(walk(&db, &key, select).await.unwrap(), 100);
    }
    // Part of the log, without hashing.
    let mut scan = db.scan(
        40,
        55,
        ScanOptions {
            hashes: false,
            ..opts(2, 4)
        },
    );
    let mut seqs = Vec::new();
    while let Some(page) = scan.next().await {
        for r in page.unwrap().iter() {
            assert_eq!(r.recomputed, None);
            seqs.push(r.seq);
        }
    }
    assert_eq!(seqs, (41..=55).collect::<Vec<_>>());
}

async fn a_scan_dropped_early_stops_its_readers(b: Backend) {
    filled(&b).await;
    let db = b.open().await;
    for _ in 0..20 {
        let mut scan = db.scan(0, 100, opts(3, 2));
        let first = scan.next().await.unwrap().unwrap();
        assert_eq!(first.get(0).map(|r| r.seq), Some(1));
        drop(scan);
    }
    // Readers that outlived their scans would hold connections; the pool still serves.
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), db.last_seq())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, Some(100));
}

async fn a_scan_of_a_range_with_a_hole_returns_what_is_there(b: Backend) {
    let key = filled(&b).await;
    tamper(&b, "DELETE FROM events WHERE seq BETWEEN 30 AND 49").await;
    let db = b.open().await;
    let mut scan = db.scan(0, 100, opts(2, 10));
    let (mut pages, mut seqs) = (0, Vec::new());
    while let Some(page) = scan.next().await {
        pages += 1;
        seqs.extend(page.unwrap().iter().map(|r| r.seq));
    }
    assert_eq!(pages, 10, "empty ranges still come, in turn");
    assert_eq!(seqs.len(), 80);
    expect_tampered_at(&db, &key, 30).await;
}

async fn an_unreadable_row_is_named_after_an_earlier_break_in_another_reader(b: Backend) {
    let key = filled(&b).await;
    match b {
        Backend::Sqlite(_) => {
            // A text column holding bytes that are not UTF-8, and an integer column holding
            // text: both only SQLite stores.
            tamper(
                &b,
                "UPDATE events SET actor = CAST(x'ff00fe' AS TEXT) WHERE seq = 44",
            )
            .await;
            tamper(&b, "UPDATE events SET time_ns = 'yesterday' WHERE seq = 71").await;
            let db = b.open().await;
            expect_tampered_at(&db, &key, 44).await;
            tamper(&b, "UPDATE events SET reason = 'edited' WHERE seq = 20").await;
            expect_tampered_at(&db, &key, 20).await;
        }
        Backend::Postgres(_) => {
            tamper(&b, "UPDATE events SET hash = '\\x00'::bytea WHERE seq = 44").await;
            let db = b.open().await;
            expect_tampered_at(&db, &key, 44).await;
            tamper(&b, "UPDATE events SET reason = 'edited' WHERE seq = 20").await;
            expect_tampered_at(&db, &key, 20).await;
        }
    }
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_tampering_at_its_row() {
    for (sql, seq) in [
        ("UPDATE events SET time_ns = 'yesterday' WHERE seq = 71", 71),
        ("UPDATE events SET time_ns = x'0102' WHERE seq = 12", 12),
        ("UPDATE events SET hash = 'short' WHERE seq = 90", 90),
    ] {
        let b = Backend::sqlite();
        let key = filled(&b).await;
        tamper(&b, sql).await;
        expect_tampered_at(&b.open().await, &key, seq).await;
        // The page reader used by export and tail names the same row.
        match b.open().await.page(0, &Filter::default()).await {
            Err(Error::Tampered(t)) => assert_eq!(t.seq, seq, "{sql}: {t}"),
            Err(e) => panic!("{sql}: {e}"),
            Ok(rows) => panic!("{sql}: read {} rows", rows.len()),
        }
    }
}

async fn tamper(b: &Backend, sql: &str) {
    let drop = match b {
        Backend::Sqlite(_) => {
            "DROP TRIGGER IF EXISTS events_no_update; DROP TRIGGER IF EXISTS events_no_delete;"
        }
        Backend::Postgres(_) => "ALTER TABLE events DISABLE TRIGGER USER;",
    };
    b.tamper(&format!("{drop} {sql}")).await;
}
