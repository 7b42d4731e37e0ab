//! Where records live: SQLite (the default, a file in the data dir) or PostgreSQL. Each
//! backend module holds only its SQL; this module chooses one by URL and dispatches.

mod postgres;
mod sqlite;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result, Tampered};
use crate::event::Record;
use crate::merkle::Hash;

/// Rows read per query when walking the log; bounds memory on any log size.
pub const PAGE: i64 = 8192;

/// A checkpoint with the Merkle frontier it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub checkpoint: Checkpoint,
    pub frontier: Vec<u8>,
}

/// What to read back.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub from_seq: Option<u64>,
    pub to_seq: Option<u64>,
    pub from_time_ns: Option<i64>,
    pub to_time_ns: Option<i64>,
    pub kind: Option<String>,
}

/// `SELECT … WHERE seq > after` with the filter's conditions, ordered, one page long: the
/// same query on both backends (`push_bind` writes each dialect's placeholders).
fn page_query<'a, DB>(after: u64, f: &Filter) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut qb = sqlx::QueryBuilder::new(format!("SELECT {COLUMNS} FROM events WHERE seq > "));
    qb.push_bind(after.max(f.from_seq.unwrap_or(0).saturating_sub(1)) as i64);
    if let Some(to) = f.to_seq {
        qb.push(" AND seq <= ").push_bind(to as i64);
    }
    if let Some(t) = f.from_time_ns {
        qb.push(" AND time_ns >= ").push_bind(t);
    }
    if let Some(t) = f.to_time_ns {
        qb.push(" AND time_ns < ").push_bind(t);
    }
    if let Some(k) = &f.kind {
        qb.push(" AND kind = ").push_bind(k.clone());
    }
    qb.push(" ORDER BY seq LIMIT ").push_bind(PAGE);
    qb
}

#[derive(Clone)]
pub enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// A write transaction holding the log's writer lock.
pub enum WriteTx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Db {
    /// Opens (creating and migrating) the store at `url`: `sqlite://PATH` or
    /// `postgres://…`. `schema` puts PostgreSQL tables in their own schema.
    pub async fn open(url: &str, schema: Option<&str>) -> Result<Self> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            Ok(Self::Sqlite(sqlite::open(path).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(postgres::open(url, schema).await?))
        } else {
            Err(Error::Config(format!(
                "audit.url {url:?}: expected sqlite://PATH or postgres://…"
            )))
        }
    }

    /// The store for the writer thread: on SQLite a connection of its own, opened from the
    /// calling thread so that the connection's worker thread inherits its priority
    /// ([`crate::background`]); on PostgreSQL the same pool (the work is the server's).
    pub async fn for_writer(&self) -> Result<Self> {
        Ok(match self {
            Self::Sqlite(p) => Self::Sqlite(sqlite::dedicated(p).await?),
            Self::Postgres(p) => Self::Postgres(p.clone()),
        })
    }

    pub async fn begin_write(&self) -> Result<WriteTx> {
        Ok(match self {
            Self::Sqlite(p) => WriteTx::Sqlite(sqlite::begin_write(p).await?),
            Self::Postgres(p) => WriteTx::Postgres(postgres::begin_write(p).await?),
        })
    }

    pub async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>> {
        match self {
            Self::Sqlite(p) => sqlite::checkpoints(p).await,
            Self::Postgres(p) => postgres::checkpoints(p).await,
        }
    }

    /// The newest stored event's sequence number, if any.
    pub async fn last_seq(&self) -> Result<Option<u64>> {
        match self {
            Self::Sqlite(p) => sqlite::last_seq(p).await,
            Self::Postgres(p) => postgres::last_seq(p).await,
        }
    }

    /// The oldest stored event's sequence number, if any: above 1 once retention removed
    /// events (or someone deleted them; [`crate::verify`] tells which).
    pub async fn first_seq(&self) -> Result<Option<u64>> {
        match self {
            Self::Sqlite(p) => sqlite::first_seq(p).await,
            Self::Postgres(p) => postgres::first_seq(p).await,
        }
    }

    /// Event hashes with `after < seq <= to`, in order.
    pub async fn hashes(&self, after: u64, to: u64) -> Result<Vec<(u64, Hash)>> {
        match self {
            Self::Sqlite(p) => sqlite::hashes(p, after, to).await,
            Self::Postgres(p) => postgres::hashes(p, after, to).await,
        }
    }

    /// One page of records with `seq > after` matching `filter`, in order. A record whose
    /// stored fields cannot be read is reported as tampering at its sequence number.
    pub async fn page(&self, after: u64, filter: &Filter) -> Result<Vec<Record>> {
        match self {
            Self::Sqlite(p) => sqlite::page(p, after, filter).await,
            Self::Postgres(p) => postgres::page(p, after, filter).await,
        }
    }

    /// Removes events up to the checkpoint at `up_to`, under the signed `audit.retention`
    /// statement already stored at `statement_seq` (see [`crate::retention::retain`]); the
    /// database refuses a statement that is missing or names another prefix.
    pub async fn retain(&self, up_to: u64, statement_seq: u64, now_ns: i64) -> Result<u64> {
        match self {
            Self::Sqlite(p) => sqlite::retain(p, up_to, statement_seq, now_ns).await,
            Self::Postgres(p) => postgres::retain(p, up_to, statement_seq, now_ns).await,
        }
    }

    pub async fn close(&self) {
        match self {
            Self::Sqlite(p) => p.close().await,
            Self::Postgres(p) => p.close().await,
        }
    }
}

impl WriteTx {
    /// The last stored (seq, hash).
    pub async fn tail(&mut self) -> Result<Option<(u64, Hash)>> {
        match self {
            Self::Sqlite(t) => sqlite::tail(t).await,
            Self::Postgres(t) => postgres::tail(t).await,
        }
    }

    pub async fn latest_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>> {
        match self {
            Self::Sqlite(t) => sqlite::latest_checkpoint(t).await,
            Self::Postgres(t) => postgres::latest_checkpoint(t).await,
        }
    }

    /// Event hashes with seq > `after`, in order (to rebuild the Merkle frontier).
    pub async fn hashes_after(&mut self, after: u64) -> Result<Vec<Hash>> {
        match self {
            Self::Sqlite(t) => sqlite::hashes_after(t, after).await,
            Self::Postgres(t) => postgres::hashes_after(t, after).await,
        }
    }

    pub async fn insert(&mut self, records: &[Record]) -> Result<()> {
        match self {
            Self::Sqlite(t) => sqlite::insert(t, records).await,
            Self::Postgres(t) => postgres::insert(t, records).await,
        }
    }

    pub async fn insert_checkpoint(&mut self, cp: &Checkpoint, frontier: &[u8]) -> Result<()> {
        match self {
            Self::Sqlite(t) => sqlite::insert_checkpoint(t, cp, frontier).await,
            Self::Postgres(t) => postgres::insert_checkpoint(t, cp, frontier).await,
        }
    }

    pub async fn commit(self) -> Result<()> {
        match self {
            Self::Sqlite(t) => t.commit().await?,
            Self::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }
}

pub(crate) fn hash32(seq: u64, what: &str, v: &[u8]) -> Result<Hash> {
    v.try_into().map_err(|_| {
        Error::Tampered(Tampered {
            seq,
            reason: format!("{what} is {} bytes, not 32", v.len()),
        })
    })
}

pub(crate) fn text(seq: u64, what: &str, v: &[u8]) -> Result<String> {
    String::from_utf8(v.to_vec()).map_err(|_| {
        Error::Tampered(Tampered {
            seq,
            reason: format!("{what} is not valid UTF-8"),
        })
    })
}

pub(crate) fn checkpoint_from(
    tree_size: i64,
    root: &[u8],
    last_hash: &[u8],
    frontier: Vec<u8>,
    time_ns: i64,
    key_id: String,
    signature: Vec<u8>,
) -> Result<StoredCheckpoint> {
    let seq = tree_size as u64;
    Ok(StoredCheckpoint {
        checkpoint: Checkpoint {
            tree_size: seq,
            root: hash32(seq, "checkpoint root", root)?,
            last_hash: hash32(seq, "checkpoint last hash", last_hash)?,
            time_ns,
            key_id,
            signature,
        },
        frontier,
    })
}

/// The columns every read selects, in [`Record`] order.
pub(crate) const COLUMNS: &str = "seq, time_ns, kind, actor, subject, action, outcome, reason, correlation_id, node, details, prev_hash, hash";
