//! Retention on SQLite and on the machine's real PostgreSQL: removing old events is itself a
//! signed statement in the log, and every way of erasing history without one — a forged
//! anchor row, a deletion past the statement, a statement with a bad signature or for another
//! prefix — makes verification fail naming the missing events, also with a key kept elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
mod common;

use common::{append_n, writer, Backend};
use esm_audit::checkpoint::{load_public, PublicKey, SigningKey};
use esm_audit::event::{prepare, Record};
use esm_audit::export::{export, verify_export};
use esm_audit::hash_chain::link;
use esm_audit::retention::{self, Retained, Statement};
use esm_audit::store::{Db, Filter};
use esm_audit::verify::verify;
use esm_audit::writer::WriterOptions;
use esm_audit::Error;

fn opts() -> WriterOptions {
    WriterOptions {
        checkpoint_every: 3,
        ..Default::default()
    }
}

/// A log with checkpoints at 3, 6, 9, …, signed with a key kept in a directory (so the writer
/// and the retention statement use the same key), and a copy of the public key kept "off the
/// box".
struct Log {
    b: Backend,
    keys: tempfile::TempDir,
    external: PublicKey,
}

impl Log {
    async fn of(b: Backend, events: u64) -> Self {
        let keys = tempfile::tempdir().unwrap();
        let external = SigningKey::load_or_create(keys.path()).unwrap().public();
        let log = Self { b, keys, external };
        log.append(0, events).await;
        log
    }

    fn key(&self) -> SigningKey {
        SigningKey::load_or_create(self.keys.path()).unwrap()
    }

    async fn db(&self) -> Db {
        self.b.open().await
    }

    /// Appends events in threes, so each lands on a checkpoint.
    async fn append(&self, from: u64, n: u64) {
        let (sink, handle) = writer(self.db().await, self.key(), opts()).await;
        let mut i = from;
        while i < from + n {
            append_n(&sink, i, 3.min(from + n - i)).await;
            i += 3;
        }
        handle.shutdown().await.unwrap();
    }

    /// `esm audit retain` as the library does it.
    async fn retain(&self, up_to: u64) -> Result<Retained, Error> {
        let db = self.db().await;
        let (sink, handle) = writer(self.db().await, self.key(), opts()).await;
        let r = retention::retain(&db, &self.key(), &sink, up_to, "cli:uid:0", "test").await;
        handle.shutdown().await.unwrap();
        r
    }

    /// Verifies with the key kept elsewhere and with the one next to the log; both must
    /// agree, and on failure name the same sequence number and reason.
    async fn verify(&self) -> Result<esm_audit::verify::Report, esm_audit::Tampered> {
        let db = self.db().await;
        let external = verify(&db, &self.external, None).await;
        let local = verify(&db, &load_public(self.keys.path()).unwrap(), None).await;
        match (external, local) {
            (Ok(a), Ok(b)) if a == b => Ok(a),
            (Err(Error::Tampered(a)), Err(Error::Tampered(b))) if a == b => Err(a),
            (a, b) => panic!("the two keys disagree or a non-tampering error: {a:?} / {b:?}"),
        }
    }

    /// Appends `e` at the tail with a valid chain hash, as any role that may INSERT can.
    async fn insert_at_tail(&self, e: esm_audit::Event) -> Record {
        let db = self.db().await;
        let mut tx = db.begin_write().await.unwrap();
        let (seq, hash) = tx.tail().await.unwrap().unwrap();
        let r = link(prepare(e, &|v| v.to_owned()).unwrap(), seq, hash);
        tx.insert(std::slice::from_ref(&r)).await.unwrap();
        tx.commit().await.unwrap();
        r
    }

    /// Deletes with the database's guards switched off: root with the SQLite file, or a
    /// PostgreSQL superuser.
    async fn delete_unguarded(&self, sql: &str) {
        let off = match self.b {
            Backend::Sqlite(_) => {
                "DROP TRIGGER events_no_delete; DROP TRIGGER anchor_needs_statement;"
            }
            Backend::Postgres(_) => {
                "ALTER TABLE events DISABLE TRIGGER USER; \
                 ALTER TABLE retention_anchor DISABLE TRIGGER USER;"
            }
        };
        self.b.tamper(&format!("{off} {sql}")).await;
    }

    /// The stored checkpoint at `size`.
    async fn checkpoint(&self, size: u64) -> esm_audit::store::StoredCheckpoint {
        let all = self.db().await.checkpoints().await.unwrap();
        all.into_iter()
            .find(|c| c.checkpoint.tree_size == size)
            .unwrap()
    }
}

fn assert_gap(r: Result<esm_audit::verify::Report, esm_audit::Tampered>, upto: u64) {
    let t = r.expect_err("a shortened log must not verify");
    assert_eq!(t.seq, 1, "{t}");
    let want = format!("events 1..{upto} missing: no signed retention statement covers them");
    assert!(t.reason.starts_with(&want), "{t}");
}

both_backends!(
    a_forged_anchor_row_does_not_erase_history,
    genuine_retention_verifies_and_one_more_deletion_fails,
    a_statement_with_a_bad_signature_covers_nothing,
    a_statement_for_another_prefix_covers_nothing,
    retaining_every_event_then_appending_continues_the_chain,
    retention_refuses_a_log_that_does_not_verify,
    an_export_of_a_forged_gap_does_not_verify,
    a_store_from_before_signed_retention_opens_and_its_unsigned_gap_fails,
);

async fn a_forged_anchor_row_does_not_erase_history(b: Backend) {
    let log = Log::of(b, 9).await;
    // The reproduced attack, as esm's own database role: an anchor row, then the delete.
    let anchor = log
        .b
        .try_sql("INSERT INTO retention_anchor (up_to_seq, time_ns) VALUES (3, 0)")
        .await;
    assert!(anchor.is_err(), "a bare anchor row was accepted");
    let delete = log.b.try_sql("DELETE FROM events WHERE seq <= 3").await;
    assert!(delete.unwrap_err().contains("append-only"));
    assert_eq!(log.db().await.first_seq().await.unwrap(), Some(1));
    // Root with the file (or a superuser) gets past the triggers; verify still says what is gone.
    log.delete_unguarded(
        "INSERT INTO retention_anchor (up_to_seq, time_ns) VALUES (3, 0); \
         DELETE FROM events WHERE seq <= 3;",
    )
    .await;
    assert_gap(log.verify().await, 3);
    // Also when verifying only from a later checkpoint.
    let db = log.db().await;
    assert!(
        matches!(verify(&db, &log.external, Some(8)).await, Err(Error::Tampered(t)) if t.seq == 1)
    );
}

async fn genuine_retention_verifies_and_one_more_deletion_fails(b: Backend) {
    let log = Log::of(b, 9).await;
    let done = log.retain(3).await.unwrap();
    assert_eq!((done.up_to, done.statement_seq, done.removed), (3, 10, 3));
    let report = log.verify().await.unwrap();
    assert_eq!(
        (
            report.anchor,
            report.retention,
            report.first_seq,
            report.last_seq
        ),
        (Some(3), Some(10), 4, 10)
    );
    // The statement says what was removed, when and by whom.
    let st = log.db().await.page(9, &Filter::default()).await.unwrap();
    assert_eq!(
        (st[0].kind.as_str(), st[0].actor.as_str()),
        ("audit.retention", "cli:uid:0")
    );
    // The statement licenses nothing beyond its prefix, by plain DELETE …
    let err = log
        .b
        .try_sql("DELETE FROM events WHERE seq = 4")
        .await
        .unwrap_err();
    assert!(err.contains("append-only"), "{err}");
    // … nor through the retention path itself with a statement for another prefix.
    assert!(log.db().await.retain(6, 10, 0).await.is_err());
    log.delete_unguarded("DELETE FROM events WHERE seq = 4")
        .await;
    let t = log.verify().await.unwrap_err();
    assert!(t.reason.contains("events 1..4 missing"), "{t}");
    assert!(t.reason.contains("covers events 1..3"), "{t}");
}

/// A statement in the right shape, signed by someone without the key: the database (which
/// cannot check signatures) may take it, verification does not.
async fn a_statement_with_a_bad_signature_covers_nothing(b: Backend) {
    let log = Log::of(b, 9).await;
    let stranger = SigningKey::ephemeral().unwrap();
    let mut forged = Statement::sign(&stranger, &log.checkpoint(3).await, 1, "cli:uid:0")
        .await
        .unwrap();
    forged.key_id = log.external.id.clone();
    let r = log.insert_at_tail(forged.event("forged").unwrap()).await;
    // On PostgreSQL only esm_retain deletes; its checks pass for a well-shaped statement.
    assert_eq!(log.db().await.retain(3, r.seq, 0).await.unwrap(), 3);
    let t = log.verify().await.unwrap_err();
    assert!(t.reason.starts_with("events 1..3 missing"), "{t}");
    assert!(
        t.reason.contains("signature that does not verify (forged)"),
        "{t}"
    );
}

async fn a_statement_for_another_prefix_covers_nothing(b: Backend) {
    let log = Log::of(b, 9).await;
    // A genuine statement for events 1..6 (say, from a retain that stopped before deleting).
    let genuine = Statement::sign(&log.key(), &log.checkpoint(6).await, 1, "cli:uid:0")
        .await
        .unwrap();
    let at = log
        .insert_at_tail(genuine.event("retain").unwrap())
        .await
        .seq;
    // The database will not let it remove only 1..3.
    assert!(log.db().await.retain(3, at, 0).await.is_err());
    log.delete_unguarded("DELETE FROM events WHERE seq <= 3")
        .await;
    let t = log.verify().await.unwrap_err();
    assert!(t.reason.starts_with("events 1..3 missing"), "{t}");
    // Edited to claim 1..3, its signature breaks.
    let mut edited = genuine.clone();
    edited.first_kept = 4;
    edited.anchor = log.checkpoint(3).await.checkpoint;
    edited.frontier = log.checkpoint(3).await.frontier;
    log.insert_at_tail(edited.event("retain").unwrap()).await;
    let t = log.verify().await.unwrap_err();
    assert!(t.reason.starts_with("events 1..3 missing"), "{t}");
    assert!(
        t.reason.contains("signature that does not verify (forged)"),
        "{t}"
    );
}

async fn retaining_every_event_then_appending_continues_the_chain(b: Backend) {
    let log = Log::of(b, 9).await;
    // Retention only anchors at a checkpoint.
    assert!(matches!(log.retain(5).await, Err(Error::Config(_))));
    assert_eq!(log.retain(9).await.unwrap().removed, 9);
    // Only the statement is left; a restarted writer continues after it.
    log.append(100, 3).await;
    let report = log.verify().await.unwrap();
    assert_eq!(
        (
            report.anchor,
            report.retention,
            report.first_seq,
            report.last_seq
        ),
        (Some(9), Some(10), 10, 13)
    );
    // A second retention removes the first statement along with the events it kept.
    let again = log.retain(13).await.unwrap();
    assert_eq!((again.statement_seq, again.removed), (14, 4));
    let report = log.verify().await.unwrap();
    assert_eq!((report.anchor, report.retention), (Some(13), Some(14)));
    // Never twice over the same events.
    assert!(matches!(log.retain(13).await, Err(Error::Config(_))));
}

async fn retention_refuses_a_log_that_does_not_verify(b: Backend) {
    let log = Log::of(b, 9).await;
    let drop = match log.b {
        Backend::Sqlite(_) => "DROP TRIGGER events_no_update;",
        Backend::Postgres(_) => "ALTER TABLE events DISABLE TRIGGER USER;",
    };
    log.b
        .tamper(&format!(
            "{drop} UPDATE events SET actor = 'x' WHERE seq = 2"
        ))
        .await;
    // Signing a statement over the edited events would launder the edit.
    assert!(matches!(log.retain(3).await, Err(Error::Tampered(t)) if t.seq == 2));
    assert_eq!(log.db().await.first_seq().await.unwrap(), Some(1));
}

async fn an_export_of_a_forged_gap_does_not_verify(b: Backend) {
    let log = Log::of(b, 9).await;
    log.retain(3).await.unwrap();
    let mut out = Vec::new();
    export(&log.db().await, &Filter::default(), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("{\"anchor\""));
    let report = verify_export(&mut text.as_bytes(), &log.external).unwrap();
    assert_eq!((report.anchor, report.retention), (Some(3), Some(10)));
    // Past the statement: the export starts at the checkpoint at 6, which nothing signed
    // says may be the start.
    log.delete_unguarded("DELETE FROM events WHERE seq <= 6")
        .await;
    let mut out = Vec::new();
    export(&log.db().await, &Filter::default(), &mut out)
        .await
        .unwrap();
    let forged = String::from_utf8(out).unwrap();
    match verify_export(&mut forged.as_bytes(), &log.external) {
        Err(Error::Tampered(t)) => assert!(t.reason.starts_with("events 1..6 missing"), "{t}"),
        other => panic!("{other:?}"),
    }
}

/// The store as esm made it before signed retention: schema 0001 only.
async fn legacy(b: &Backend) -> Db {
    let dir = tempfile::tempdir().unwrap();
    let dialect = match b {
        Backend::Sqlite(_) => "sqlite",
        Backend::Postgres(_) => "postgres",
    };
    let src = format!(
        "{}/migrations/{dialect}/0001_audit.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::copy(src, dir.path().join("0001_audit.sql")).unwrap();
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    match b {
        Backend::Sqlite(_) => {
            use std::str::FromStr;
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&b.url())
                .unwrap()
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
            migrator.run(&pool).await.unwrap();
            Db::Sqlite(pool)
        }
        Backend::Postgres(schema) => {
            use std::str::FromStr;
            let opts = sqlx::postgres::PgConnectOptions::from_str(&common::pg_url()).unwrap();
            let admin = sqlx::PgPool::connect_with(opts.clone()).await.unwrap();
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&admin)
                .await
                .unwrap();
            let pool = sqlx::PgPool::connect_with(opts.options([("search_path", schema.as_str())]))
                .await
                .unwrap();
            migrator.run(&pool).await.unwrap();
            Db::Postgres(pool)
        }
    }
}

async fn a_store_from_before_signed_retention_opens_and_its_unsigned_gap_fails(b: Backend) {
    let fresh = match b {
        Backend::Sqlite(_) => Backend::sqlite(),
        Backend::Postgres(_) => Backend::postgres(),
    };
    for (b, retained_before) in [(b, true), (fresh, false)] {
        let keys = tempfile::tempdir().unwrap();
        let key = || SigningKey::load_or_create(keys.path()).unwrap();
        let old = legacy(&b).await;
        let (sink, handle) = writer(old.clone(), key(), opts()).await;
        for i in 0..3 {
            append_n(&sink, i * 3, 3).await;
        }
        handle.shutdown().await.unwrap();
        if retained_before {
            // Retention as it used to be: an unsigned anchor row, then the delete.
            b.tamper(
                "INSERT INTO retention_anchor VALUES (3, 0); DELETE FROM events WHERE seq <= 3;",
            )
            .await;
        }
        old.close().await;
        let log = Log {
            external: key().public(),
            b,
            keys,
        };
        // The upgraded store opens and takes events.
        log.append(100, 3).await;
        if retained_before {
            // Nothing tells such a gap from the attack; it is reported, not trusted.
            assert_gap(log.verify().await, 3);
            let err = log
                .b
                .try_sql("DELETE FROM events WHERE seq = 4")
                .await
                .unwrap_err();
            assert!(err.contains("append-only"), "{err}");
        } else {
            log.retain(6).await.unwrap();
            assert_eq!(log.verify().await.unwrap().anchor, Some(6));
        }
    }
}
