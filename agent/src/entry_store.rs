//! Registration entries in the server's database, on the store layer the audit log uses
//! ([`esm_audit::store::Db`]): the same SQLite file (owner-only, WAL, `synchronous =
//! FULL`) or the same PostgreSQL database and `audit.schema`. The table comes from this
//! crate's migrations, numbered from 1001 so that they and the audit log's share sqlx's
//! migration table without either taking the other's for its own.

use esm_audit::store::Db;
use sqlx::migrate::Migrator;
use sqlx::Row;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::entry::{Entry, NewEntry};
use crate::error::{Error, Result};

/// Registration entries a store will hold; more is a mistake or an attack.
pub const MAX_ENTRIES: usize = 100_000;

static SQLITE: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/sqlite")
};
static POSTGRES: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/postgres")
};

// SQL both databases accept: `$n` placeholders (SQLite reads `$1` as parameter 1).
// One column list for both reads, written once (`concat!` needs a literal, hence the macro).
macro_rules! select_entries {
    ($rest:literal) => {
        concat!(
            "SELECT id, spiffe_id, selectors, ttl_secs, dns_names, created_at ",
            "FROM registration_entries ",
            $rest
        )
    };
}
const SELECT: &str = select_entries!("ORDER BY created_at, id");
const GET: &str = select_entries!("WHERE id = $1");
const INSERT: &str = "INSERT INTO registration_entries VALUES ($1, $2, $3, $4, $5, $6)";
const DELETE: &str = "DELETE FROM registration_entries WHERE id = $1";

pub struct EntryStore {
    db: Db,
}

fn db(e: sqlx::Error) -> Error {
    Error::Database(e)
}

fn store(e: esm_audit::Error) -> Error {
    if e.is_usage_error() {
        Error::Config(format!("registration entries: {e}"))
    } else {
        Error::Store(e)
    }
}

fn row_to_entry<R: Row>(r: &R) -> Result<Entry>
where
    usize: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let id: String = r.try_get(0).map_err(db)?;
    let corrupt = |why: String| Error::CorruptState {
        path: "registration_entries".into(),
        reason: format!("entry {id}: {why}"),
    };
    let spiffe: String = r.try_get(1).map_err(db)?;
    let sels: String = r.try_get(2).map_err(db)?;
    let ttl: Option<i64> = r.try_get(3).map_err(db)?;
    let dns: String = r.try_get(4).map_err(db)?;
    Ok(Entry {
        spiffe_id: esm_identity::SpiffeId::parse(&spiffe).map_err(|e| corrupt(e.to_string()))?,
        selectors: serde_json::from_str(&sels).map_err(|e| corrupt(e.to_string()))?,
        ttl_secs: ttl.map(|t| t.max(1) as u64),
        dns_names: serde_json::from_str(&dns).map_err(|e| corrupt(e.to_string()))?,
        created_at: r.try_get(5).map_err(db)?,
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

/// A new entry id: 128 random bits in hex.
pub fn random_id() -> Result<String> {
    let mut raw = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| Error::Bug("no randomness".into()))?;
    Ok(esm_ca::issuer::hex(&raw))
}

impl EntryStore {
    /// `sqlite://PATH` or `postgres://…`; `schema` is `audit.schema` (PostgreSQL only).
    pub async fn open(url: &str, schema: Option<&str>) -> Result<Self> {
        let db = Db::connect(url, schema, false).await.map_err(store)?;
        match &db {
            Db::Sqlite(_) => db.migrate(&SQLITE).await,
            Db::Postgres(_) => db.migrate(&POSTGRES).await,
        }
        .map_err(store)?;
        Ok(Self { db })
    }

    /// Every entry, oldest first.
    pub async fn list(&self) -> Result<Vec<Entry>> {
        let (tx, mut rx) = mpsc::channel(1024);
        let send = self.stream(tx);
        let mut all = Vec::new();
        let collect = async {
            while let Some(e) = rx.recv().await {
                all.push(e?);
            }
            Ok::<_, Error>(())
        };
        let (sent, collected) = tokio::join!(send, collect);
        collected?;
        sent?;
        Ok(all)
    }

    /// Sends every entry, oldest first, as the database returns them: a reader of 100,000
    /// entries holds a row at a time, not all of them. Stops early (without error) when
    /// the receiver is dropped; a row that cannot be read is sent as its error, last.
    pub async fn stream(&self, tx: mpsc::Sender<Result<Entry>>) -> Result<()> {
        macro_rules! go {
            ($p:expr) => {{
                let mut rows = sqlx::query(SELECT).fetch($p);
                while let Some(row) = rows.next().await {
                    let entry = row.map_err(db).and_then(|r| row_to_entry(&r));
                    let failed = entry.is_err();
                    if tx.send(entry).await.is_err() || failed {
                        break;
                    }
                }
            }};
        }
        match &self.db {
            Db::Sqlite(p) => go!(p),
            Db::Postgres(p) => go!(p),
        }
        Ok(())
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
        self.insert(std::slice::from_ref(&entry)).await?;
        Ok(entry)
    }

    /// Writes `entries` in one transaction: all or none. The caller has checked them
    /// ([`crate::entry_import::plan`]); an id already taken fails the whole transaction.
    pub async fn insert(&self, entries: &[Entry]) -> Result<()> {
        macro_rules! insert {
            ($p:expr) => {{
                let mut tx = $p.begin().await.map_err(db)?;
                for entry in entries {
                    let sels = serde_json::to_string(&entry.selectors)
                        .map_err(|e| Error::Bug(e.to_string()))?;
                    let dns = serde_json::to_string(&entry.dns_names)
                        .map_err(|e| Error::Bug(e.to_string()))?;
                    let ttl = entry.ttl_secs.map(|t| t.min(i64::MAX as u64) as i64);
                    sqlx::query(INSERT)
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
        match &self.db {
            Db::Sqlite(p) => insert!(p),
            Db::Postgres(p) => insert!(p),
        }
    }

    /// Deletes an entry; `None` when there was none with that id.
    pub async fn delete(&self, id: &str) -> Result<Option<Entry>> {
        let Some(entry) = self.get(id).await? else {
            return Ok(None);
        };
        macro_rules! delete {
            ($p:expr) => {
                sqlx::query(DELETE).bind(id).execute($p).await.map(|_| ())
            };
        }
        match &self.db {
            Db::Sqlite(p) => delete!(p),
            Db::Postgres(p) => delete!(p),
        }
        .map_err(db)?;
        Ok(Some(entry))
    }

    /// The entry with this id, if any.
    pub async fn get(&self, id: &str) -> Result<Option<Entry>> {
        macro_rules! get {
            ($p:expr) => {
                sqlx::query(GET)
                    .bind(id)
                    .fetch_optional($p)
                    .await
                    .map_err(db)?
                    .map(|r| row_to_entry(&r))
                    .transpose()
            };
        }
        match &self.db {
            Db::Sqlite(p) => get!(p),
            Db::Postgres(p) => get!(p),
        }
    }

    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}
