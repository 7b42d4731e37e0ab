//! Stores to test against: a SQLite file in a temp dir, and a fresh schema in the machine's
//! PostgreSQL (`ESM_TEST_POSTGRES_URL`, default postgres://postgres@127.0.0.1:5432/test).
//! PostgreSQL being unreachable fails the tests; nothing is skipped.
#![allow(dead_code, unused_macros, clippy::unwrap_used, clippy::expect_used)]

use esm_audit::checkpoint::SigningKey;
use esm_audit::redact::Redactor;
use esm_audit::store::Db;
use esm_audit::writer::{start, AuditSink, WriterHandle, WriterOptions};
use esm_audit::{kind, Event, Outcome};

/// Runs each named `async fn(Backend)` as a test on SQLite and on PostgreSQL (the test file
/// imports `Backend`).
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name(super::Backend::sqlite()).await } )* }
        mod postgres { $( #[tokio::test] async fn $name() { super::$name(super::Backend::postgres()).await } )* }
    };
}

pub fn pg_url() -> String {
    std::env::var("ESM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Backend {
    pub fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    pub fn postgres() -> Self {
        let mut r = [0u8; 6];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r).unwrap();
        Self::Postgres(format!("esm_test_{}", hex::encode(r)))
    }

    pub fn url(&self) -> String {
        match self {
            Self::Sqlite(d) => format!("sqlite://{}", d.path().join("audit.db").display()),
            Self::Postgres(_) => pg_url(),
        }
    }

    pub fn schema(&self) -> Option<&str> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(s) => Some(s),
        }
    }

    pub async fn open(&self) -> Db {
        Db::open(&self.url(), self.schema()).await.unwrap()
    }

    /// Runs raw SQL as the database owner, triggers and all, as an attacker with a superuser
    /// session would.
    pub async fn tamper(&self, sql: &str) {
        match self {
            Self::Sqlite(_) => {
                use sqlx::Connection;
                let mut c = sqlx::SqliteConnection::connect(&self.url()).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
                c.close().await.unwrap();
            }
            Self::Postgres(schema) => {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&pg_url()).await.unwrap();
                sqlx::raw_sql(&format!("SET search_path TO {schema}; {sql}"))
                    .execute(&mut c)
                    .await
                    .unwrap();
                c.close().await.unwrap();
            }
        }
    }

    /// Runs SQL through the normal path and returns the database's error, if any.
    pub async fn try_sql(&self, sql: &str) -> Result<(), String> {
        match self.open().await {
            Db::Sqlite(p) => sqlx::raw_sql(sql)
                .execute(&p)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Db::Postgres(p) => sqlx::raw_sql(sql)
                .execute(&p)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Self::Postgres(schema) = self {
            let schema = schema.clone();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&pg_url()).await {
                        let _ = sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
                            .execute(&mut c)
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

pub fn event(i: u64) -> Event {
    let mut e = Event::new(
        kind::AUTHZ_DECISION,
        if i.is_multiple_of(2) {
            Outcome::Allow
        } else {
            Outcome::Deny
        },
    );
    e.actor = format!("spiffe://example.org/client/{}", i % 7);
    e.subject = "spiffe://example.org/server".into();
    e.action = "check".into();
    e.correlation_id = format!("req-{i}");
    e.details = serde_json::json!({"path": format!("/items/{i}"), "method": "GET"}).into();
    e
}

pub async fn writer(db: Db, key: SigningKey, opts: WriterOptions) -> (AuditSink, WriterHandle) {
    start(db, key, Redactor::from_secret(&[7; 32]), opts)
        .await
        .unwrap()
}

/// Appends `n` events and waits for all to be committed; returns their sequence numbers.
pub async fn append_n(sink: &AuditSink, from: u64, n: u64) -> Vec<u64> {
    let mut receipts = Vec::new();
    for i in from..from + n {
        receipts.push(sink.append(event(i)).await.unwrap());
    }
    let mut seqs = Vec::new();
    for r in receipts {
        seqs.push(r.committed().await.unwrap());
    }
    seqs
}

/// How many events the `audit.gap` records in `db` say were lost, in all.
pub async fn dropped_in_gaps(db: &Db) -> u64 {
    let filter = esm_audit::store::Filter {
        kind: Some(kind::AUDIT_GAP.into()),
        ..Default::default()
    };
    db.page(0, &filter)
        .await
        .unwrap()
        .iter()
        .map(|g| {
            serde_json::from_str::<serde_json::Value>(&g.details).unwrap()["dropped"]
                .as_u64()
                .unwrap()
        })
        .sum()
}
