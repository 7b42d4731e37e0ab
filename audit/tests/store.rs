//! The audit store on SQLite and on the machine's real PostgreSQL: appends, checkpoints,
//! append-only enforcement by the database, and verification catching every kind of edit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use common::{append_n, event, writer, Backend};
use esm_audit::checkpoint::SigningKey;
use esm_audit::redact::Redactor;
use esm_audit::verify::verify;
use esm_audit::writer::{OnFull, WriterOptions};
use esm_audit::Error;

fn opts(every: u64) -> WriterOptions {
    WriterOptions {
        checkpoint_every: every,
        node: "node-1".into(),
        ..Default::default()
    }
}

/// A log of 100 events with checkpoints every 10, and its public key.
async fn filled(b: &Backend) -> esm_audit::checkpoint::PublicKey {
    let key = SigningKey::ephemeral().unwrap();
    let public = key.public();
    let (sink, handle) = writer(b.open().await, key, opts(10)).await;
    for chunk in 0..10 {
        append_n(&sink, chunk * 10, 10).await;
    }
    handle.shutdown().await.unwrap();
    public
}

async fn expect_tampered(b: &Backend, key: &esm_audit::checkpoint::PublicKey, seq: u64) {
    match verify(&b.open().await, key, None).await {
        Err(Error::Tampered(t)) => assert_eq!(t.seq, seq, "{t}"),
        other => panic!("expected tampering at {seq}, got {other:?}"),
    }
}

both_backends!(
    appends_acknowledge_in_order_and_verify,
    restart_continues_the_chain,
    database_refuses_update_and_delete,
    verify_catches_a_modified_event,
    verify_catches_a_deleted_event,
    verify_catches_an_inserted_event,
    verify_catches_two_swapped_events,
    verify_catches_a_truncated_tail,
    verify_catches_a_forged_checkpoint,
    two_writers_share_one_chain,
    drop_mode_writes_a_counted_gap,
    invalid_utf8_in_a_row_is_reported_not_skipped,
);

async fn appends_acknowledge_in_order_and_verify(b: Backend) {
    let key = SigningKey::ephemeral().unwrap();
    let public = key.public();
    let (sink, handle) = writer(b.open().await, key, opts(10)).await;
    let mut seqs = append_n(&sink, 0, 10).await;
    seqs.extend(append_n(&sink, 10, 10).await);
    seqs.extend(append_n(&sink, 20, 5).await);
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());
    handle.shutdown().await.unwrap();
    let db = b.open().await;
    let report = verify(&db, &public, None).await.unwrap();
    assert_eq!(
        (report.first_seq, report.last_seq, report.events),
        (1, 25, 25)
    );
    // At the first commit after every 10 events, plus a final one at shutdown.
    assert_eq!(db.checkpoints().await.unwrap().len(), 3);
    let from = verify(&db, &public, Some(15)).await.unwrap();
    assert_eq!(from.first_seq, 11);
}

async fn restart_continues_the_chain(b: Backend) {
    let key = SigningKey::ephemeral().unwrap();
    let public = key.public();
    let (sink, handle) = writer(b.open().await, key.clone(), opts(1000)).await;
    append_n(&sink, 0, 5).await;
    handle.shutdown().await.unwrap();
    // A different signing key after restart is refused before it writes anything; the
    // log's own key picks the chain up where it ended.
    let refused = esm_audit::writer::start(
        b.open().await,
        SigningKey::ephemeral().unwrap(),
        Redactor::from_secret(&[7; 32]),
        opts(1000),
    )
    .await;
    assert!(matches!(refused, Err(Error::Config(_))));
    let (sink, handle) = writer(b.open().await, key, opts(1000)).await;
    assert_eq!(append_n(&sink, 5, 5).await, (6..=10).collect::<Vec<_>>());
    handle.shutdown().await.unwrap();
    assert_eq!(
        verify(&b.open().await, &public, None)
            .await
            .unwrap()
            .last_seq,
        10
    );
}

async fn database_refuses_update_and_delete(b: Backend) {
    filled(&b).await;
    for sql in [
        "UPDATE events SET actor = 'mallory' WHERE seq = 3",
        "DELETE FROM events WHERE seq = 100",
        "DELETE FROM events",
        "UPDATE checkpoints SET key_id = 'x'",
        "DELETE FROM checkpoints",
    ] {
        let err = b.try_sql(sql).await.unwrap_err();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    if let Backend::Postgres(_) = b {
        let err = b.try_sql("TRUNCATE events").await.unwrap_err();
        assert!(err.contains("append-only"), "{err}");
    }
}

const DROP_TRIGGERS_SQLITE: &str = "DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete; DROP TRIGGER checkpoints_no_update; DROP TRIGGER checkpoints_no_delete;";
const DROP_TRIGGERS_PG: &str =
    "ALTER TABLE events DISABLE TRIGGER USER; ALTER TABLE checkpoints DISABLE TRIGGER USER;";

async fn tamper(b: &Backend, sql: &str) {
    let drop = match b {
        Backend::Sqlite(_) => DROP_TRIGGERS_SQLITE,
        Backend::Postgres(_) => DROP_TRIGGERS_PG,
    };
    b.tamper(&format!("{drop} {sql}")).await;
}

async fn verify_catches_a_modified_event(b: Backend) {
    let key = filled(&b).await;
    tamper(&b, "UPDATE events SET reason = 'edited' WHERE seq = 37").await;
    expect_tampered(&b, &key, 37).await;
}

async fn verify_catches_a_deleted_event(b: Backend) {
    let key = filled(&b).await;
    tamper(&b, "DELETE FROM events WHERE seq = 52").await;
    expect_tampered(&b, &key, 52).await;
}

async fn verify_catches_an_inserted_event(b: Backend) {
    let key = filled(&b).await;
    // Make room at 61 by shifting everything after it up by one, then insert a copy.
    tamper(
        &b,
        "UPDATE events SET seq = seq + 1000 WHERE seq > 60; UPDATE events SET seq = seq - 999 WHERE seq > 1000; \
         INSERT INTO events SELECT 61, time_ns, kind, 'mallory', subject, action, outcome, reason, correlation_id, node, details, prev_hash, hash FROM events WHERE seq = 60;",
    )
    .await;
    expect_tampered(&b, &key, 61).await;
}

async fn verify_catches_two_swapped_events(b: Backend) {
    let key = filled(&b).await;
    tamper(
        &b,
        "UPDATE events SET seq = -1 WHERE seq = 20; UPDATE events SET seq = 20 WHERE seq = 21; UPDATE events SET seq = 21 WHERE seq = -1;",
    )
    .await;
    expect_tampered(&b, &key, 20).await;
}

async fn verify_catches_a_truncated_tail(b: Backend) {
    let key = filled(&b).await;
    tamper(&b, "DELETE FROM events WHERE seq > 85").await;
    expect_tampered(&b, &key, 86).await;
}

async fn verify_catches_a_forged_checkpoint(b: Backend) {
    let key = filled(&b).await;
    let sig = match b {
        Backend::Sqlite(_) => "x'00'",
        Backend::Postgres(_) => "'\\x00'::bytea",
    };
    tamper(
        &b,
        &format!("UPDATE checkpoints SET signature = {sig} WHERE tree_size = 40"),
    )
    .await;
    expect_tampered(&b, &key, 40).await;
}

async fn two_writers_share_one_chain(b: Backend) {
    let key = SigningKey::ephemeral().unwrap();
    let public = key.public();
    let (s1, h1) = writer(b.open().await, key.clone(), opts(7)).await;
    // Another process on the same store, with the same key (a writer with another key is
    // refused: `restart_continues_the_chain`).
    let (s2, h2) = writer(b.open().await, key, opts(1_000_000)).await;
    let mut all = Vec::new();
    for round in 0..5 {
        all.extend(append_n(&s1, round * 10, 5).await);
        all.extend(append_n(&s2, round * 10 + 5, 5).await);
    }
    h2.shutdown().await.unwrap();
    h1.shutdown().await.unwrap();
    all.sort();
    assert_eq!(all, (1..=50).collect::<Vec<_>>());
    // The chain is whole, and every checkpoint from either writer verifies.
    assert_eq!(
        verify(&b.open().await, &public, None)
            .await
            .unwrap()
            .last_seq,
        50
    );
}

async fn drop_mode_writes_a_counted_gap(b: Backend) {
    let key = SigningKey::ephemeral().unwrap();
    let public = key.public();
    let o = WriterOptions {
        queue_capacity: 4,
        on_full: OnFull::Drop,
        ..opts(1000)
    };
    let (sink, handle) = writer(b.open().await, key, o).await;
    let mut receipts = Vec::new();
    let mut dropped = 0;
    for i in 0..200 {
        match sink.try_append(event(i)) {
            Ok(r) => receipts.push(r),
            Err(Error::QueueFull) => dropped += 1,
            Err(e) => panic!("{e}"),
        }
    }
    for r in receipts {
        r.committed().await.unwrap();
    }
    // One more event makes the writer record the gap before it.
    sink.record(event(999)).await.unwrap();
    handle.shutdown().await.unwrap();
    assert!(dropped > 0);
    let db = b.open().await;
    let counted = common::dropped_in_gaps(&db).await;
    assert_eq!(counted, dropped);
    verify(&db, &public, None).await.unwrap();
}

async fn invalid_utf8_in_a_row_is_reported_not_skipped(b: Backend) {
    let key = filled(&b).await;
    match b {
        Backend::Sqlite(_) => {
            tamper(
                &b,
                "UPDATE events SET actor = CAST(x'ff00fe' AS TEXT) WHERE seq = 44",
            )
            .await;
            expect_tampered(&b, &key, 44).await;
        }
        // PostgreSQL refuses invalid UTF-8 in text columns itself.
        Backend::Postgres(_) => {
            let r = b.try_sql("INSERT INTO events (seq) VALUES (convert_from('\\xff'::bytea, 'UTF8')::bigint)").await;
            assert!(r.is_err());
        }
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    std::fs::write(&path, vec![0x42; 8192]).unwrap();
    let err = esm_audit::store::Db::open(&format!("sqlite://{}", path.display()), None)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::Open { .. }), "{err}");
    // A file that is not a database is a wrong path: the operator's to fix (exit 2).
    assert!(err.is_usage_error(), "{err}");
    assert!(err.to_string().contains("audit.db"), "{err}");
    // sqlx's own error stays the source, so its words reach the operator.
    let source = std::error::Error::source(&err).map(|s| s.to_string());
    assert!(
        source
            .as_deref()
            .is_some_and(|s| s.contains("not a database")),
        "{source:?}"
    );
}

/// The data dir is traversable (workloads reach the agent socket in it), so the audit
/// database and its WAL files must not be readable by other users whatever the umask.
#[cfg(unix)]
#[tokio::test]
async fn a_new_sqlite_store_and_its_wal_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let db = esm_audit::store::Db::open(&format!("sqlite://{}", path.display()), None)
        .await
        .unwrap();
    let (sink, handle) = writer(db, SigningKey::ephemeral().unwrap(), opts(1000)).await;
    append_n(&sink, 0, 3).await;
    for name in ["audit.db", "audit.db-wal", "audit.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
    }
    drop(sink);
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_damaged_database_page_is_reported() {
    let b = Backend::sqlite();
    let key = filled(&b).await;
    let path = match &b {
        Backend::Sqlite(d) => d.path().join("audit.db"),
        Backend::Postgres(_) => unreachable!(),
    };
    // Checkpoint the WAL into the main file, then damage a page in the middle.
    b.tamper("PRAGMA wal_checkpoint(TRUNCATE);").await;
    let mut bytes = std::fs::read(&path).unwrap();
    let from = bytes.len() / 4;
    for b in &mut bytes[from..] {
        *b = 0xA5;
    }
    std::fs::write(&path, bytes).unwrap();
    let r = match esm_audit::store::Db::open(&b.url(), None).await {
        Err(e) => Err(e),
        Ok(db) => verify(&db, &key, None).await.map(|_| ()),
    };
    assert!(r.is_err(), "a damaged file must not verify");
}

#[tokio::test]
async fn unknown_url_scheme_is_a_config_error() {
    let err = esm_audit::store::Db::open("mysql://x", None)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::Config(_)));
}

#[tokio::test]
async fn huge_details_are_bounded_in_the_store() {
    let b = Backend::sqlite();
    let (sink, handle) = writer(b.open().await, SigningKey::ephemeral().unwrap(), opts(10)).await;
    let mut e = event(1);
    e.details = serde_json::json!({"body": "x".repeat(5 << 20)}).into();
    let seq = sink.record(e).await.unwrap();
    handle.shutdown().await.unwrap();
    let rows = b
        .open()
        .await
        .page(seq - 1, &Default::default())
        .await
        .unwrap();
    assert!(rows[0].details.len() < 200);
    assert!(rows[0].details.contains("_omitted"));
}
