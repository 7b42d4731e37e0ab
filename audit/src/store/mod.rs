//! Where records live: SQLite (the default, a file in the data dir) or PostgreSQL. The
//! store is written once ([`dialect`]) over what the two databases do differently (their
//! modules); this module chooses one by URL and dispatches. Long reads go through
//! [`scan`], which reads ahead on several readers while the caller consumes in order.

mod dialect;
mod page;
mod pg_copy;
mod postgres;
mod scan;
mod sqlite;
mod sqlite_scan;
mod sqlite_writer;

use dialect::Dialect;
pub use page::{Page, RecordRef};
pub use scan::{Scan, ScanOptions, SCAN_PAGE};
use sqlx::{Postgres, Sqlite};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
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

impl StoredCheckpoint {
    /// From the [`CP_COLUMNS`] values as stored, in that order.
    pub(crate) fn from_columns(
        tree_size: i64,
        root: &[u8],
        last_hash: &[u8],
        frontier: Vec<u8>,
        time_ns: i64,
        key_id: String,
        signature: Vec<u8>,
    ) -> Result<Self> {
        let seq = tree_size as u64;
        Ok(Self {
            checkpoint: Checkpoint {
                tree_size: seq,
                root: page::hash32(seq, "checkpoint root", root)?,
                last_hash: page::hash32(seq, "checkpoint last hash", last_hash)?,
                time_ns,
                key_id,
                signature,
            },
            frontier,
        })
    }
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

/// Runs `$body` with `$p` bound to the pool (or transaction) and `$D` to its dialect.
macro_rules! each {
    ($on:expr, $Sq:path, $Pg:path, |$D:ident, $p:ident| $body:expr) => {
        match $on {
            $Sq($p) => {
                type $D = Sqlite;
                $body
            }
            $Pg($p) => {
                type $D = Postgres;
                $body
            }
        }
    };
}

#[derive(Clone)]
pub enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// A write transaction holding the log's writer lock.
pub enum WriteTx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    /// The audit writer's own ([`WriterDb`]).
    SqliteDirect(sqlite_writer::DirectTx),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// The audit writer's store: on SQLite a connection of its own that the writer's thread
/// runs itself ([`sqlite_writer`]), on PostgreSQL the pool (the work is the server's).
pub enum WriterDb {
    Sqlite(sqlite_writer::Conn),
    Postgres(sqlx::PgPool),
}

impl WriterDb {
    /// Ends a transaction a failure left open on the writer's SQLite connection.
    pub fn abandon(&self) {
        if let Self::Sqlite(c) = self {
            c.abandon();
        }
    }

    pub async fn begin_write(&self) -> Result<WriteTx> {
        Ok(match self {
            Self::Sqlite(c) => WriteTx::SqliteDirect(c.begin()?),
            Self::Postgres(p) => WriteTx::Postgres(Postgres::begin_write(p).await?),
        })
    }
}

impl Db {
    /// Opens (creating and migrating) the store at `url`: `sqlite://PATH` or
    /// `postgres://…`. `schema` puts PostgreSQL tables in their own schema. A SQLite file is
    /// checked whole first ([`sqlite::open`]), since a writer is about to append to it.
    pub async fn open(url: &str, schema: Option<&str>) -> Result<Self> {
        Self::open_with(url, schema, true).await
    }

    /// Opens the store for commands that only read it (verification, reports): as
    /// [`Db::open`], without reading the whole SQLite file up front (the reads check every
    /// page they touch, and verification every row).
    pub async fn open_to_read(url: &str, schema: Option<&str>) -> Result<Self> {
        Self::open_with(url, schema, false).await
    }

    async fn open_with(url: &str, schema: Option<&str>, check: bool) -> Result<Self> {
        let db = Self::connect(url, schema, check).await?;
        match &db {
            Self::Sqlite(_) => db.migrate(&sqlite::MIGRATIONS).await?,
            Self::Postgres(_) => db.migrate(&postgres::MIGRATIONS).await?,
        }
        Ok(db)
    }

    /// Connects without touching any table: the layer for another store in the same
    /// database (the same SQLite file with its owner-only mode and durability settings, or
    /// the same PostgreSQL schema), which then runs its own migrations ([`Db::migrate`]).
    /// `check` reads a SQLite file whole first, as [`Db::open`] does.
    pub async fn connect(url: &str, schema: Option<&str>, check: bool) -> Result<Self> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            Ok(Self::Sqlite(sqlite::connect(path, check).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(postgres::connect(url, schema).await?))
        } else {
            Err(Error::Config(format!(
                "audit.url {url:?}: expected sqlite://PATH or postgres://…"
            )))
        }
    }

    /// Applies `migrator` (one per dialect, from `sqlx::migrate!`). Stores sharing a
    /// database share sqlx's migration table: give each its own version range and
    /// `set_ignore_missing(true)`, so each ignores the others' versions.
    pub async fn migrate(&self, migrator: &sqlx::migrate::Migrator) -> Result<()> {
        each!(self, Self::Sqlite, Self::Postgres, |_D, p| migrator
            .run(p)
            .await?);
        Ok(())
    }

    /// The audit writer's store ([`WriterDb`]). A SQLite store must be a file: the
    /// writer opens its own connection to it.
    pub fn for_writer(&self) -> Result<WriterDb> {
        Ok(match self {
            Self::Sqlite(p) => {
                let path = sqlite_scan::file_of(p).ok_or_else(|| {
                    Error::Config("audit.url: the audit log must be a database file".into())
                })?;
                WriterDb::Sqlite(sqlite_writer::Conn::open(&path)?)
            }
            Self::Postgres(p) => WriterDb::Postgres(p.clone()),
        })
    }

    pub async fn begin_write(&self) -> Result<WriteTx> {
        Ok(match self {
            Self::Sqlite(p) => WriteTx::Sqlite(Sqlite::begin_write(p).await?),
            Self::Postgres(p) => WriteTx::Postgres(Postgres::begin_write(p).await?),
        })
    }

    pub async fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>> {
        each!(self, Self::Sqlite, Self::Postgres, |D, p| D::checkpoints(
            p, false
        )
        .await)
    }

    /// The newest stored event's sequence number, if any.
    pub async fn last_seq(&self) -> Result<Option<u64>> {
        each!(self, Self::Sqlite, Self::Postgres, |D, p| D::seq_bound(
            p, false
        )
        .await)
    }

    /// The oldest stored event's sequence number, if any: above 1 once retention removed
    /// events (or someone deleted them; [`crate::verify`] tells which).
    pub async fn first_seq(&self) -> Result<Option<u64>> {
        each!(self, Self::Sqlite, Self::Postgres, |D, p| D::seq_bound(
            p, true
        )
        .await)
    }

    /// Event hashes with `after < seq <= to`, in order.
    pub async fn hashes(&self, after: u64, to: u64) -> Result<Vec<(u64, Hash)>> {
        each!(self, Self::Sqlite, Self::Postgres, |D, p| D::hashes(
            p, after, to
        )
        .await)
    }

    /// One page of records with `seq > after` matching `filter`, in order. A record whose
    /// stored fields cannot be read is reported as tampering at its sequence number.
    pub async fn page(&self, after: u64, filter: &Filter) -> Result<Vec<Record>> {
        match self.read_page(after, filter.clone(), PAGE as usize).await {
            (_, Some(e)) => Err(e),
            (page, None) => Ok(page.to_records()),
        }
    }

    /// As [`Db::page`], `limit` rows at most, as a [`Page`]; when a row is unreadable, the
    /// rows before it come with the error.
    pub(crate) async fn read_page(
        &self,
        after: u64,
        filter: Filter,
        limit: usize,
    ) -> (Page, Option<Error>) {
        each!(self, Self::Sqlite, Self::Postgres, |D, p| D::page(
            p, after, filter, limit
        )
        .await)
    }

    /// Reads the events with `after < seq <= to` in order, several pages ahead of the
    /// caller ([`scan`]). Needs a Tokio runtime.
    pub fn scan(&self, after: u64, to: u64, opts: ScanOptions) -> Scan {
        Scan::start(self, after, to, opts)
    }

    /// Removes events up to the checkpoint at `up_to`, under the signed `audit.retention`
    /// statement already stored at `statement_seq` (see [`crate::retention::retain`]); the
    /// database refuses a statement that is missing or names another prefix.
    pub async fn retain(&self, up_to: u64, statement_seq: u64, now_ns: i64) -> Result<u64> {
        each!(self, Self::Sqlite, Self::Postgres, |D, p| {
            D::retain(p, up_to, statement_seq, now_ns).await
        })
    }

    pub async fn close(&self) {
        each!(self, Self::Sqlite, Self::Postgres, |_D, p| p.close().await)
    }
}

/// Runs `$direct` for the writer's own SQLite connection, else `$body` as [`each!`] does.
macro_rules! each_tx {
    ($on:expr, |$d:ident| $direct:expr, |$D:ident, $t:ident| $body:expr) => {
        match $on {
            WriteTx::SqliteDirect($d) => $direct,
            WriteTx::Sqlite($t) => {
                type $D = Sqlite;
                $body
            }
            WriteTx::Postgres($t) => {
                type $D = Postgres;
                $body
            }
        }
    };
}

impl WriteTx {
    /// The last stored (seq, hash).
    pub async fn tail(&mut self) -> Result<Option<(u64, Hash)>> {
        each_tx!(self, |d| d.tail(), |D, t| D::tail(&mut **t).await)
    }

    pub async fn latest_checkpoint(&mut self) -> Result<Option<StoredCheckpoint>> {
        each_tx!(self, |d| d.latest_checkpoint(), |D, t| {
            Ok(D::checkpoints(&mut **t, true).await?.pop())
        })
    }

    /// Event hashes with seq > `after`, in order (to rebuild the Merkle frontier).
    pub async fn hashes_after(&mut self, after: u64) -> Result<Vec<Hash>> {
        each_tx!(self, |d| d.hashes_after(after), |D, t| {
            let all = D::hashes(&mut **t, after, u64::MAX).await?;
            Ok(all.into_iter().map(|(_, h)| h).collect())
        })
    }

    pub async fn insert(&mut self, records: &[Record]) -> Result<()> {
        each_tx!(self, |d| d.insert(records), |D, t| D::insert(t, records)
            .await)
    }

    pub async fn insert_checkpoint(&mut self, cp: &Checkpoint, frontier: &[u8]) -> Result<()> {
        each_tx!(self, |d| d.insert_checkpoint(cp, frontier), |D, t| {
            D::insert_checkpoint(&mut **t, cp, frontier).await
        })
    }

    pub async fn commit(self) -> Result<()> {
        each_tx!(self, |d| d.commit(), |_D, t| Ok(t.commit().await?))
    }
}

/// The columns every read selects, in [`Record`] order.
pub(crate) const COLUMNS: &str = "seq, time_ns, kind, actor, subject, action, outcome, reason, correlation_id, node, details, prev_hash, hash";

/// The checkpoint columns, in [`StoredCheckpoint`] order as `dialect` reads them.
pub(crate) const CP_COLUMNS: &str =
    "tree_size, root, last_hash, frontier, time_ns, key_id, signature";
