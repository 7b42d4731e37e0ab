//! Registration entries in the server's database: SQLite in the data dir by default,
//! PostgreSQL by configuration (the audit store's URL). One table, created if missing; the
//! audit store's migrations are not touched.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};

use super::entry::{Entry, ImportedEntry, NewEntry};
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

fn db(e: sqlx::Error) -> Error {
    Error::Database(e)
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
        spiffe_id: esm_identity::SpiffeId::parse(&spiffe).map_err(|e| corrupt(e.to_string()))?,
        selectors: serde_json::from_str(&sels).map_err(|e| corrupt(e.to_string()))?,
        ttl_secs: ttl.map(|t| t.max(1) as u64),
        dns_names: serde_json::from_str(&dns).map_err(|e| corrupt(e.to_string()))?,
        created_at: at,
        id,
    })
}

/// Whether `new` may join `existing`: its own bounds, the store's size, no duplicate.
fn admit(existing: &[Entry], new: &NewEntry) -> Result<()> {
    new.check()?;
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
    Ok(())
}

fn random_id() -> Result<String> {
    let mut raw = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| Error::Bug("no randomness".into()))?;
    Ok(esm_ca::issuer::hex(&raw))
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
        let existing = self.list().await?;
        admit(&existing, &new)?;
        let entry = Entry {
            id: random_id()?,
            spiffe_id: new.spiffe_id,
            selectors: new.selectors,
            ttl_secs: new.ttl_secs,
            dns_names: new.dns_names,
            created_at: esm_ca::rfc3339(now),
        };
        self.insert_all(std::slice::from_ref(&entry)).await?;
        Ok(entry)
    }

    /// Stores all of `items` or none: every one is checked (bounds, esm's reserved
    /// identities, duplicates among themselves and with the store) before any is written,
    /// then all are written in one transaction.
    pub async fn import(
        &self,
        items: Vec<ImportedEntry>,
        now: time::OffsetDateTime,
    ) -> Result<Vec<Entry>> {
        let mut all = self.list().await?;
        let before = all.len();
        for (i, item) in items.into_iter().enumerate() {
            let at_line = |e: Error| match e {
                Error::Refused(m) => Error::Refused(format!("import line {}: {m}", i + 1)),
                other => other,
            };
            item.check().map_err(at_line)?;
            admit(&all, &item.new_entry()).map_err(at_line)?;
            let id = match item.id {
                Some(id) if all.iter().any(|e| e.id == id) => {
                    return Err(at_line(Error::Refused(format!("entry id {id} exists"))))
                }
                Some(id) => id,
                None => random_id()?,
            };
            all.push(Entry {
                id,
                spiffe_id: item.spiffe_id,
                selectors: item.selectors,
                ttl_secs: item.ttl_secs,
                dns_names: item.dns_names,
                created_at: item.created_at.unwrap_or_else(|| esm_ca::rfc3339(now)),
            });
        }
        let added = all.split_off(before);
        self.insert_all(&added).await?;
        Ok(added)
    }

    async fn insert_all(&self, entries: &[Entry]) -> Result<()> {
        macro_rules! insert {
            ($p:expr, $q:literal) => {{
                let mut tx = $p.begin().await.map_err(db)?;
                for entry in entries {
                    let sels = serde_json::to_string(&entry.selectors)
                        .map_err(|e| Error::Bug(e.to_string()))?;
                    let dns = serde_json::to_string(&entry.dns_names)
                        .map_err(|e| Error::Bug(e.to_string()))?;
                    let ttl = entry.ttl_secs.map(|t| t.min(i64::MAX as u64) as i64);
                    sqlx::query($q)
                        .bind(&entry.id)
                        .bind(entry.spiffe_id.as_str())
                        .bind(&sels)
                        .bind(ttl)
                        .bind(&dns)
                        .bind(&entry.created_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                }
                tx.commit().await.map_err(db)
            }};
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
        }
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
