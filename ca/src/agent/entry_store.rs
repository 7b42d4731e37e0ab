//! Registration entries in the server's database: SQLite in the data dir by default,
//! PostgreSQL by configuration (the audit store's URL). One table, created if missing; the
//! audit store's migrations are not touched.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};

use super::entry::{Entry, NewEntry};
use crate::error::{Error, Result};

/// Registration entries a store will hold; more is a mistake or an attack.
pub const MAX_ENTRIES: usize = 100_000;

enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

pub struct EntryStore {
    pool: Pool,
}

fn db(e: impl std::fmt::Display) -> Error {
    Error::Config(format!("registration entries database: {e}"))
}

const CREATE: &str = "CREATE TABLE IF NOT EXISTS registration_entries (
    id TEXT PRIMARY KEY,
    spiffe_id TEXT NOT NULL,
    selectors TEXT NOT NULL,
    ttl_secs BIGINT,
    dns_names TEXT NOT NULL,
    created_at TEXT NOT NULL)";

fn row_to_entry(
    id: String,
    spiffe: String,
    sels: String,
    ttl: Option<i64>,
    dns: String,
    at: String,
) -> Result<Entry> {
    let corrupt = |why: String| Error::CorruptState {
        path: "registration_entries".into(),
        reason: format!("entry {id}: {why}"),
    };
    Ok(Entry {
        spiffe_id: crate::SpiffeId::parse(&spiffe).map_err(|e| corrupt(e.to_string()))?,
        selectors: serde_json::from_str(&sels).map_err(|e| corrupt(e.to_string()))?,
        ttl_secs: ttl.map(|t| t.max(1) as u64),
        dns_names: serde_json::from_str(&dns).map_err(|e| corrupt(e.to_string()))?,
        created_at: at,
        id,
    })
}

impl EntryStore {
    /// `sqlite://PATH` or `postgres://…`.
    pub async fn open(url: &str) -> Result<Self> {
        let pool = if let Some(path) = url.strip_prefix("sqlite://") {
            let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
                .map_err(db)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10));
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(2)
                    .connect_with(opts)
                    .await
                    .map_err(db)?,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(2)
                    .connect(url)
                    .await
                    .map_err(db)?,
            )
        } else {
            return Err(Error::Config(format!(
                "registration entries: unsupported database URL {url:?}"
            )));
        };
        let store = Self { pool };
        match &store.pool {
            Pool::Sqlite(p) => sqlx::query(CREATE).execute(p).await.map(|_| ()),
            Pool::Postgres(p) => sqlx::query(CREATE).execute(p).await.map(|_| ()),
        }
        .map_err(db)?;
        Ok(store)
    }

    /// Every entry, oldest first.
    pub async fn list(&self) -> Result<Vec<Entry>> {
        const Q: &str = "SELECT id, spiffe_id, selectors, ttl_secs, dns_names, created_at \
                         FROM registration_entries ORDER BY created_at, id";
        macro_rules! rows {
            ($p:expr) => {
                sqlx::query(Q)
                    .fetch_all($p)
                    .await
                    .map_err(db)?
                    .into_iter()
                    .map(|r| {
                        row_to_entry(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
                    })
                    .collect()
            };
        }
        match &self.pool {
            Pool::Sqlite(p) => rows!(p),
            Pool::Postgres(p) => rows!(p),
        }
    }

    /// Stores a new entry; the same SPIFFE ID with the same selectors twice is refused.
    pub async fn create(&self, new: NewEntry, now: time::OffsetDateTime) -> Result<Entry> {
        new.check()?;
        let existing = self.list().await?;
        if existing.len() >= MAX_ENTRIES {
            return Err(Error::Refused(format!("already {MAX_ENTRIES} entries")));
        }
        if let Some(dup) = existing
            .iter()
            .find(|e| e.spiffe_id == new.spiffe_id && e.selectors == new.selectors)
        {
            return Err(Error::Refused(format!(
                "entry {} already has this SPIFFE ID and these selectors",
                dup.id
            )));
        }
        let mut raw = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| Error::Bug("no randomness".into()))?;
        let entry = Entry {
            id: crate::issuer::hex(&raw),
            spiffe_id: new.spiffe_id,
            selectors: new.selectors,
            ttl_secs: new.ttl_secs,
            dns_names: new.dns_names,
            created_at: crate::rfc3339(now),
        };
        let sels =
            serde_json::to_string(&entry.selectors).map_err(|e| Error::Bug(e.to_string()))?;
        let dns = serde_json::to_string(&entry.dns_names).map_err(|e| Error::Bug(e.to_string()))?;
        let ttl = entry.ttl_secs.map(|t| t.min(i64::MAX as u64) as i64);
        macro_rules! insert {
            ($p:expr, $q:literal) => {
                sqlx::query($q)
                    .bind(&entry.id)
                    .bind(entry.spiffe_id.as_str())
                    .bind(&sels)
                    .bind(ttl)
                    .bind(&dns)
                    .bind(&entry.created_at)
                    .execute($p)
                    .await
                    .map(|_| ())
                    .map_err(db)?
            };
        }
        match &self.pool {
            Pool::Sqlite(p) => insert!(
                p,
                "INSERT INTO registration_entries VALUES (?, ?, ?, ?, ?, ?)"
            ),
            Pool::Postgres(p) => insert!(
                p,
                "INSERT INTO registration_entries VALUES ($1, $2, $3, $4, $5, $6)"
            ),
        };
        Ok(entry)
    }

    /// Deletes an entry; `None` when there was none with that id.
    pub async fn delete(&self, id: &str) -> Result<Option<Entry>> {
        let Some(entry) = self.list().await?.into_iter().find(|e| e.id == id) else {
            return Ok(None);
        };
        match &self.pool {
            Pool::Sqlite(p) => sqlx::query("DELETE FROM registration_entries WHERE id = ?")
                .bind(id)
                .execute(p)
                .await
                .map(|_| ()),
            Pool::Postgres(p) => sqlx::query("DELETE FROM registration_entries WHERE id = $1")
                .bind(id)
                .execute(p)
                .await
                .map(|_| ()),
        }
        .map_err(db)?;
        Ok(Some(entry))
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}
