//! The streaming pass over a real store (SQLite and the machine's PostgreSQL): a period in
//! the middle of the log starts from the checkpoint before it, carries registered entries in
//! from before it, stops after it, and a deleted event fails the log's integrity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use esm_audit::checkpoint::SigningKey;
use esm_audit::redact::Redactor;
use esm_audit::store::Db;
use esm_audit::writer::{start, AuditSink, WriterOptions};
use esm_audit::{kind, Event, Outcome};
use esm_report::model::Status;
use esm_report::{Framework, Params, Period, Request};

const WEB: &str = "spiffe://t/web";
const OTHER: &str = "spiffe://t/other";

fn now_ns() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64
}

fn decision(caller: &str) -> Event {
    let mut e = Event::new(kind::AUTHZ_DECISION, Outcome::Allow);
    e.actor = caller.into();
    e.subject = "spiffe://t/api".into();
    e.details =
        serde_json::json!({"policy.hash": "h1", "policy.set": "default", "dry_run": false}).into();
    e
}

/// Records `events`, then returns an instant after all of them (and their checkpoints).
async fn phase(sink: &AuditSink, events: Vec<Event>) -> i64 {
    for e in events {
        sink.record(e).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let t = now_ns();
    tokio::time::sleep(Duration::from_millis(30)).await;
    t
}

async fn delete_event(db: &Db, schema: Option<&str>, seq: i64) {
    match db {
        Db::Sqlite(p) => {
            sqlx::query("DROP TRIGGER events_no_delete")
                .execute(p)
                .await
                .unwrap();
            sqlx::query("DELETE FROM events WHERE seq = ?")
                .bind(seq)
                .execute(p)
                .await
                .unwrap();
        }
        Db::Postgres(p) => {
            let s = schema.unwrap();
            sqlx::query(&format!("ALTER TABLE {s}.events DISABLE TRIGGER USER"))
                .execute(p)
                .await
                .unwrap();
            sqlx::query(&format!("DELETE FROM {s}.events WHERE seq = $1"))
                .bind(seq)
                .execute(p)
                .await
                .unwrap();
        }
    }
}

async fn middle_of_the_log(url: &str, schema: Option<&str>) {
    let db = Db::open(url, schema).await.unwrap();
    let key = SigningKey::ephemeral().unwrap();
    let public = key.public();
    let opts = WriterOptions {
        checkpoint_every: 1,
        ..WriterOptions::default()
    };
    let (sink, handle) = start(db.clone(), key, Redactor::from_secret(&[1; 32]), opts)
        .await
        .unwrap();
    let mut entry = Event::new(kind::ENTRY_CREATED, Outcome::Success);
    entry.actor = "admin-socket:cli:uid:0".into();
    entry.subject = WEB.into();
    entry.details = serde_json::json!({"entry.id": "e1"}).into();
    let from = phase(&sink, vec![entry, decision(WEB)]).await;
    let to = phase(&sink, vec![decision(WEB), decision(OTHER), decision(WEB)]).await;
    phase(&sink, vec![decision(OTHER), decision(OTHER)]).await;
    drop(sink);
    handle.shutdown().await.unwrap();

    let req = |from_ns, to_ns| Request {
        framework: Framework::builtin("soc2").unwrap().unwrap(),
        period: Period { from_ns, to_ns },
        params: Params {
            svid_max_ttl_secs: Some(3600),
            ..Params::default()
        },
        store: "test".into(),
        esm_version: "test".into(),
        now_ns: now_ns(),
    };
    let r = esm_report::generate(&db, &public, &req(from, to))
        .await
        .unwrap();
    assert!(r.integrity.verified, "{:?}", r.integrity);
    assert_eq!(r.scope.events_in_period, 3);
    assert_eq!((r.scope.first_seq, r.scope.last_seq), (Some(3), Some(5)));
    // Started at the checkpoint after event 2, not at the genesis.
    assert!(
        r.integrity.events_verified < 7,
        "{}",
        r.integrity.events_verified
    );
    assert!(r.integrity.checkpoint.as_ref().unwrap().tree_size >= 5);
    let callers = r
        .controls
        .iter()
        .flat_map(|c| &c.checks)
        .find(|k| k.id == "authz.known_callers")
        .unwrap();
    // WEB's entry was created before the period and still counts; OTHER has none.
    assert_eq!(callers.status, Status::Failed);
    assert_eq!(callers.exceptions.len(), 1);
    assert_eq!(callers.exceptions[0].seq, Some(4));
    assert_eq!(callers.counts["decisions"], 3);

    // The attack: an event inside the period is deleted behind esm's back.
    delete_event(&db, schema, 4).await;
    let r = esm_report::generate(&db, &public, &req(from, to))
        .await
        .unwrap();
    assert!(!r.integrity.verified);
    assert!(r.integrity.reason.as_deref().unwrap().contains('4'));
    assert!(r.controls.iter().all(|c| c.status == Status::Failed));
    if let (Db::Postgres(p), Some(s)) = (&db, schema) {
        sqlx::query(&format!("DROP SCHEMA {s} CASCADE"))
            .execute(p)
            .await
            .unwrap();
    }
    db.close().await;
}

#[tokio::test]
async fn sqlite_period_in_the_middle_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    middle_of_the_log(&url, None).await;
}

#[tokio::test]
async fn postgres_period_in_the_middle_of_the_log() {
    let url = std::env::var("ESM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut r = [0u8; 6];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r).unwrap();
    let schema = format!("esm_report_{}", hex::encode(r));
    middle_of_the_log(&url, Some(&schema)).await;
}
