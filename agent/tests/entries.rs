//! Registration entries on both databases (the audit tests' `both_backends`): create,
//! list, duplicate refused, delete, import, a damaged row reported rather than served, and
//! the table made by migration beside the audit log's, in `audit.schema` on PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../../audit/tests/common.rs"]
mod common;

use common::Backend;
use esm_agent::entry::{NewEntry, Selector};
use esm_agent::entry_import::{parse_line, plan};
use esm_agent::entry_store::{random_id, EntryStore};
use esm_agent::Error;
use esm_audit::store::Db;
use esm_identity::SpiffeId;

fn new(spiffe: &str, sels: &[&str]) -> NewEntry {
    NewEntry {
        spiffe_id: SpiffeId::parse(spiffe).unwrap(),
        selectors: sels.iter().map(|s| Selector::parse(s).unwrap()).collect(),
        ttl_secs: Some(600),
        dns_names: vec!["web.local".into()],
    }
}

async fn exercise(store: &EntryStore) {
    let now = time::OffsetDateTime::now_utc();
    let before = store.list().await.unwrap().len();
    let a = store
        .create(new("spiffe://example.org/web", &["unix:uid:1000"]), now)
        .await
        .unwrap();
    let b = store
        .create(
            new("spiffe://example.org/web", &["unix:uid:1000", "unix:gid:5"]),
            now,
        )
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
    let dup = store
        .create(new("spiffe://example.org/web", &["unix:uid:1000"]), now)
        .await;
    assert!(dup.unwrap_err().to_string().contains("already"));
    let all = store.list().await.unwrap();
    assert_eq!(all.len(), before + 2);
    let got = all.iter().find(|e| e.id == a.id).unwrap();
    assert_eq!(got, &a);
    assert_eq!(store.delete(&a.id).await.unwrap().unwrap().id, a.id);
    assert!(store.delete(&a.id).await.unwrap().is_none());
    store.delete(&b.id).await.unwrap();
    assert_eq!(store.list().await.unwrap().len(), before);
}

/// An import's plan written in batches, as the admin API does: ids and creation times
/// carried over when given, a second import of the same lines adding nothing.
async fn import_is_idempotent(store: &EntryStore) {
    let lines = [
        r#"{"id":"00aa","spiffe_id":"spiffe://example.org/imp/a","selectors":["unix:uid:7"],"created_at":"2026-01-02T03:04:05Z"}"#,
        r#"{"spiffe_id":"spiffe://example.org/imp/b","selectors":["unix:uid:8"]}"#,
    ];
    let parsed = || -> Vec<_> {
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| (i + 1, parse_line(i + 1, l.as_bytes()).unwrap().unwrap()))
            .collect()
    };
    let existing = store.list().await.unwrap();
    let p = plan(&existing, parsed(), "2026-12-03T00:00:00Z", random_id).unwrap();
    assert_eq!(p.added.len(), 2);
    store.insert(&p.added).await.unwrap();
    let a = store.get("00aa").await.unwrap().unwrap();
    assert_eq!(a.created_at, "2026-01-02T03:04:05Z");
    let existing = store.list().await.unwrap();
    let again = plan(&existing, parsed(), "2026-12-03T00:00:00Z", random_id).unwrap();
    assert!(again.added.is_empty());
    assert_eq!(again.present, 2);
    // A transaction is all or none: a batch with a taken id writes nothing.
    let mut clash = p.added.clone();
    clash[1].id = "fresh01".into();
    assert!(store.insert(&clash).await.is_err());
    assert!(store.get("fresh01").await.unwrap().is_none());
    for e in p.added {
        store.delete(&e.id).await.unwrap();
    }
}

async fn entries_round_trip(b: Backend) {
    let store = EntryStore::open(&b.url(), b.schema()).await.unwrap();
    exercise(&store).await;
    import_is_idempotent(&store).await;
    // A row edited behind esm's back is reported, not served.
    b.tamper(
        "INSERT INTO registration_entries VALUES ('x', 'not a spiffe id', '[]', NULL, '[]', 'now')",
    )
    .await;
    assert!(store
        .list()
        .await
        .unwrap_err()
        .to_string()
        .contains("damaged"));
    store.close().await;
}

/// The audit log and the entries share one database (and on PostgreSQL one schema): each
/// store's migrations run, in either order, on every start.
async fn entries_and_audit_share_the_database(b: Backend) {
    for _ in 0..2 {
        let audit = b.open().await;
        let store = EntryStore::open(&b.url(), b.schema()).await.unwrap();
        store.close().await;
        drop(audit);
    }
    let store = EntryStore::open(&b.url(), b.schema()).await.unwrap();
    store
        .create(
            new("spiffe://example.org/shared", &["unix:uid:3"]),
            time::OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    store.close().await;
    b.open().await;
    // On PostgreSQL the table is in the configured schema, not the connection's default.
    if let Some(schema) = b.schema() {
        b.tamper("SELECT 1").await;
        let Db::Postgres(p) = b.open().await else {
            panic!("not PostgreSQL")
        };
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = $1 AND table_name = 'registration_entries'",
        )
        .bind(schema)
        .fetch_one(&p)
        .await
        .unwrap();
        assert_eq!(n, 1);
    }
}

both_backends!(entries_round_trip, entries_and_audit_share_the_database);

#[tokio::test]
async fn unsupported_urls_are_configuration_errors() {
    let Err(e) = EntryStore::open("mysql://x", None).await else {
        panic!("opened")
    };
    assert!(e.is_usage_error(), "{e}");
}

#[tokio::test]
async fn a_database_that_fails_is_a_failure_not_a_usage_error() {
    // A SQLite file in a directory that does not exist: the URL is well formed, opening
    // it fails.
    let d = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/missing/dir/entries.db", d.path().display());
    let Err(e) = EntryStore::open(&url, None).await else {
        panic!("opened")
    };
    assert!(matches!(e, Error::Store(_)), "{e}");
    assert!(!e.is_usage_error());
    assert!(
        std::error::Error::source(&e).is_some(),
        "the store layer's error is kept"
    );
}
