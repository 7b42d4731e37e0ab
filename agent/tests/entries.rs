//! Registration entries on both databases: create, list, duplicate refused, delete, and a
//! damaged row reported rather than served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use esm_agent::entry::{ImportedEntry, NewEntry, Selector};
use esm_agent::entry_store::EntryStore;
use esm_agent::Error;
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
    import_is_all_or_nothing_and_refuses_esms_identity(store).await;
}

fn imported(spiffe: &str, id: Option<&str>) -> ImportedEntry {
    serde_json::from_value(serde_json::json!({
        "id": id, "spiffe_id": spiffe, "selectors": ["unix:uid:65534"],
        "created_at": "2026-01-02T03:04:05Z",
    }))
    .unwrap()
}

/// Other test runs may share the PostgreSQL database: every ID here is this run's own.
async fn import_is_all_or_nothing_and_refuses_esms_identity(store: &EntryStore) {
    let now = time::OffsetDateTime::now_utc();
    let run = format!("{:x}", now.unix_timestamp_nanos() & 0xffff_ffff);
    let web = format!("spiffe://example.org/import-{run}/web");
    let before = store.list().await.unwrap().len();
    // A file that smuggles esm's own identity between ordinary entries: refused whole.
    let err = store
        .import(
            vec![
                imported(&web, None),
                imported("spiffe://example.org/esm/agent", None),
            ],
            now,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Reserved(_)), "{err}");
    assert!(err.to_string().contains("spiffe://example.org/esm/agent"));
    assert_eq!(store.list().await.unwrap().len(), before, "nothing stored");
    // A clean file: ids and creation times carried over when given.
    let kept = format!("{run}00aa");
    let got = store
        .import(
            vec![
                imported(&web, Some(&kept)),
                imported(&format!("{web}2"), None),
            ],
            now,
        )
        .await
        .unwrap();
    assert_eq!(got[0].id, kept);
    assert_eq!(got[0].created_at, "2026-01-02T03:04:05Z");
    assert_eq!(store.list().await.unwrap().len(), before + 2);
    // Importing the same again is a duplicate, refused with the line it is on.
    let again = store
        .import(
            vec![imported(&format!("{web}3"), None), imported(&web, None)],
            now,
        )
        .await
        .unwrap_err();
    assert!(again.to_string().contains("import line 2"), "{again}");
    for e in got {
        store.delete(&e.id).await.unwrap();
    }
}

#[tokio::test]
async fn sqlite_entries_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", d.path().join("esm.db").display());
    let store = EntryStore::open(&url).await.unwrap();
    exercise(&store).await;
    // A row edited behind esm's back is reported, not served.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "INSERT INTO registration_entries VALUES ('x', 'not a spiffe id', '[]', NULL, '[]', 'now')",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert!(store
        .list()
        .await
        .unwrap_err()
        .to_string()
        .contains("damaged"));
}

#[tokio::test]
async fn postgres_entries_round_trip() {
    let store = EntryStore::open("postgres://postgres@127.0.0.1:5432/test")
        .await
        .unwrap();
    exercise(&store).await;
}

#[tokio::test]
async fn unsupported_urls_are_configuration_errors() {
    let Err(e) = EntryStore::open("mysql://x").await else {
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
    let Err(e) = EntryStore::open(&url).await else {
        panic!("opened")
    };
    assert!(matches!(e, Error::Database(_)), "{e}");
    assert!(!e.is_usage_error());
    assert!(
        std::error::Error::source(&e).is_some(),
        "the sqlx error is kept"
    );
}
