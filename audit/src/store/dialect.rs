//! The store written once for both databases. [`Dialect`] names the few things SQLite and
//! PostgreSQL do differently (how a writer takes the log's lock, how a batch is inserted,
//! how retention deletes, how a text column is read); its provided methods are every other
//! query, in SQL both accept (`$n` placeholders: SQLite reads `$1` as parameter 1).
//!
//! Another table reuses the layer the same way: a trait of its own over `sqlx::Database`
//! with the same `where` clause, provided methods for the shared SQL, and one small impl
//! per database for what differs (DDL types, upserts); see `docs/storage.md`.

use std::future::Future;

use sqlx::Type;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Transaction,
};

use super::page::{hash32, tampered, Page, PageBuilder, TEXT_FIELDS};
use super::{Filter, StoredCheckpoint, COLUMNS, CP_COLUMNS};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::event::Record;
use crate::merkle::Hash;

/// A value for a `$n` placeholder.
pub(crate) enum Bind {
    Int(i64),
    Text(String),
}

/// SQL both databases accept for the same query.
pub(super) mod sql {
    pub const TAIL: &str = "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1";
    pub const LAST_SEQ: &str = "SELECT MAX(seq) FROM events";
    pub const FIRST_SEQ: &str = "SELECT MIN(seq) FROM events";
    pub const HASHES: &str =
        "SELECT seq, hash FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq";
    pub const INSERT_CHECKPOINT: &str = "INSERT INTO checkpoints \
        (tree_size, root, last_hash, frontier, time_ns, key_id, signature) \
        VALUES ($1, $2, $3, $4, $5, $6, $7)";
}

pub(crate) trait Dialect: Database
where
    for<'q> <Self as Database>::Arguments<'q>: IntoArguments<'q, Self>,
    i64: Type<Self> + for<'q> Encode<'q, Self> + for<'r> Decode<'r, Self>,
    String: Type<Self> + for<'q> Encode<'q, Self> + for<'r> Decode<'r, Self>,
    Vec<u8>: Type<Self> + for<'q> Encode<'q, Self> + for<'r> Decode<'r, Self>,
    for<'r> &'r [u8]: Type<Self> + Decode<'r, Self>,
    usize: ColumnIndex<Self::Row>,
{
    /// Starts a transaction that holds the log's writer lock until it ends.
    fn begin_write(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>>> + Send;

    /// Inserts linked records, in one or a few statements.
    fn insert<'t>(
        tx: &'t mut Transaction<'static, Self>,
        records: &'t [Record],
    ) -> impl Future<Output = Result<()>> + Send + 't;

    /// Removes the events covered by the signed retention statement at `statement_seq`,
    /// through whatever the database's own guard lets pass.
    fn retain(
        pool: &Pool<Self>,
        up_to: u64,
        statement_seq: u64,
        now_ns: i64,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// A text column's bytes as stored. SQLite keeps any bytes in a TEXT column (a forger
    /// can store invalid UTF-8, which must read as tampering, not as a driver error);
    /// PostgreSQL keeps only valid text.
    fn text(row: &Self::Row, i: usize) -> std::result::Result<&[u8], sqlx::Error>;

    /// The last stored (seq, hash).
    fn tail<'e>(
        ex: impl Executor<'e, Database = Self> + 'e,
    ) -> impl Future<Output = Result<Option<(u64, Hash)>>> + Send + 'e {
        async move {
            let row = sqlx::query(sql::TAIL).fetch_optional(ex).await?;
            row.map(|r| Self::seq_hash(&r)).transpose()
        }
    }

    /// The newest checkpoint, or all of them in order.
    fn checkpoints<'e>(
        ex: impl Executor<'e, Database = Self> + 'e,
        latest_only: bool,
    ) -> impl Future<Output = Result<Vec<StoredCheckpoint>>> + Send + 'e {
        async move {
            let q = if latest_only {
                format!("SELECT {CP_COLUMNS} FROM checkpoints ORDER BY tree_size DESC LIMIT 1")
            } else {
                format!("SELECT {CP_COLUMNS} FROM checkpoints ORDER BY tree_size")
            };
            let rows = sqlx::query(&q).fetch_all(ex).await?;
            rows.iter().map(Self::checkpoint_row).collect()
        }
    }

    /// The oldest (`first`) or newest stored sequence number.
    fn seq_bound<'e>(
        ex: impl Executor<'e, Database = Self> + 'e,
        first: bool,
    ) -> impl Future<Output = Result<Option<u64>>> + Send + 'e {
        async move {
            let q = if first { sql::FIRST_SEQ } else { sql::LAST_SEQ };
            let v: Option<i64> = sqlx::query_scalar(q).fetch_one(ex).await?;
            Ok(v.map(|v| v as u64))
        }
    }

    /// Event hashes with `after < seq <= to`, in order.
    fn hashes<'e>(
        ex: impl Executor<'e, Database = Self> + 'e,
        after: u64,
        to: u64,
    ) -> impl Future<Output = Result<Vec<(u64, Hash)>>> + Send + 'e {
        async move {
            let rows = sqlx::query(sql::HASHES)
                .bind(after as i64)
                .bind(to.min(i64::MAX as u64) as i64)
                .fetch_all(ex)
                .await?;
            rows.iter().map(Self::seq_hash).collect()
        }
    }

    /// One page of events with `seq > after` matching `filter`, in order. A row that cannot
    /// be an event esm wrote is tampering at its sequence number; the rows before it are
    /// returned with the error, for a walker to check first.
    fn page<'e>(
        ex: impl Executor<'e, Database = Self> + 'e,
        after: u64,
        filter: Filter,
        limit: usize,
    ) -> impl Future<Output = (Page, Option<Error>)> + Send + 'e {
        async move {
            let (sql, binds) = Self::page_query(after, &filter, limit);
            let mut q = sqlx::query(&sql);
            for b in binds {
                q = match b {
                    Bind::Int(v) => q.bind(v),
                    Bind::Text(v) => q.bind(v),
                };
            }
            let rows = match q.fetch_all(ex).await {
                Ok(rows) => rows,
                Err(e) => return (Page::default(), Some(e.into())),
            };
            let mut b = PageBuilder::with_capacity(rows.len());
            for r in &rows {
                if let Err(e) = Self::read_row(r, &mut b) {
                    let (page, bad) = b.finish();
                    return (page, Some(bad.unwrap_or(e)));
                }
            }
            b.finish()
        }
    }

    fn insert_checkpoint<'e>(
        ex: impl Executor<'e, Database = Self> + 'e,
        cp: &Checkpoint,
        frontier: &[u8],
    ) -> impl Future<Output = Result<()>> + Send + 'e {
        let q = sqlx::query(sql::INSERT_CHECKPOINT)
            .bind(cp.tree_size as i64)
            .bind(cp.root.to_vec())
            .bind(cp.last_hash.to_vec())
            .bind(frontier.to_vec())
            .bind(cp.time_ns)
            .bind(cp.key_id.clone())
            .bind(cp.signature.clone());
        async move {
            q.execute(ex).await?;
            Ok(())
        }
    }

    /// `SELECT … WHERE seq > after` with the filter's conditions, ordered, `limit` rows
    /// long, with the values to bind in order.
    fn page_query(after: u64, f: &Filter, limit: usize) -> (String, Vec<Bind>) {
        let from = after.max(f.from_seq.unwrap_or(0).saturating_sub(1));
        let mut binds = vec![Bind::Int(from.min(i64::MAX as u64) as i64)];
        let mut sql = format!("SELECT {COLUMNS} FROM events WHERE seq > $1");
        let mut cond = |sql_op: &str, b: Bind| {
            binds.push(b);
            sql.push_str(&format!(" AND {sql_op} ${}", binds.len()));
        };
        if let Some(to) = f.to_seq {
            cond("seq <=", Bind::Int(to.min(i64::MAX as u64) as i64));
        }
        if let Some(t) = f.from_time_ns {
            cond("time_ns >=", Bind::Int(t));
        }
        if let Some(t) = f.to_time_ns {
            cond("time_ns <", Bind::Int(t));
        }
        if let Some(k) = &f.kind {
            cond("kind =", Bind::Text(k.clone()));
        }
        binds.push(Bind::Int(limit as i64));
        sql.push_str(&format!(" ORDER BY seq LIMIT ${}", binds.len()));
        (sql, binds)
    }

    fn seq_hash(r: &Self::Row) -> Result<(u64, Hash)> {
        let seq = r.try_get::<i64, _>(0)? as u64;
        Ok((seq, hash32(seq, "hash", r.try_get::<&[u8], _>(1)?)?))
    }

    /// One row of [`COLUMNS`] into the page. Past `seq`, a value of the wrong type is a
    /// forged row (only SQLite lets one be stored), reported at its sequence number.
    fn read_row(r: &Self::Row, b: &mut PageBuilder) -> Result<()> {
        let seq = r.try_get::<i64, _>(0)? as u64;
        let wrong = |what: &str| tampered(seq, format!("{what} has the wrong type"));
        b.row(seq, r.try_get(1).map_err(|_| wrong("time_ns"))?);
        for (i, what) in TEXT_FIELDS.iter().enumerate() {
            b.text(Self::text(r, 2 + i).map_err(|_| wrong(what))?)?;
        }
        let prev: &[u8] = r.try_get(11).map_err(|_| wrong("prev_hash"))?;
        let hash: &[u8] = r.try_get(12).map_err(|_| wrong("hash"))?;
        b.hashes(prev, hash)
    }

    fn checkpoint_row(r: &Self::Row) -> Result<StoredCheckpoint> {
        StoredCheckpoint::from_columns(
            r.try_get(0)?,
            r.try_get(1)?,
            r.try_get(2)?,
            r.try_get(3)?,
            r.try_get(4)?,
            r.try_get(5)?,
            r.try_get(6)?,
        )
    }
}
