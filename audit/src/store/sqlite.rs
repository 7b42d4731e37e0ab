//! SQLite: WAL, `synchronous = FULL` (a commit survives power loss, not only a crash), one
//! writer at a time through `BEGIN IMMEDIATE`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

use super::{checkpoint_from, hash32, text, Filter, StoredCheckpoint, COLUMNS};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::event::Record;
use crate::merkle::Hash;

/// Rows per INSERT, largest first: every batch is cut into these few sizes, so the
/// connection's statement cache holds each statement once instead of SQLite parsing a new
/// one for every batch size. 256 rows bind 3,328 values (SQLite allows 32,766).
const INSERT_SIZES: [usize; 5] = [256, 64, 16, 4, 1];

pub async fn open(path: &str) -> Result<SqlitePool> {
    create_owner_only(path);
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
        .map_err(|e| Error::Config(format!("audit.url sqlite://{path}: {e}")))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .map_err(|e| Error::Database(format!("{path}: {e}")))?;
    // A file that is not a database, or is damaged, fails here with a clear message.
    let check: String = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_one(&pool)
        .await
        .map_err(|e| Error::Database(format!("{path}: {e}")))?;
    if check != "ok" {
        return Err(Error::Database(format!("{path}: damaged: {check}")));
    }
    sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
    Ok(pool)
}

/// Makes a missing database file empty with mode 0600 before SQLite opens it: SQLite
/// would make it with the process umask (0644 as a rule), readable by every user who can
/// enter the data dir, and it gives the `-wal` and `-shm` files the database file's mode.
/// In-memory databases and URIs with parameters are left to SQLite, and so is any error
/// here (an existing file, a missing directory): SQLite reports it in its own words.
fn create_owner_only(path: &str) {
    if path.is_empty() || path.starts_with(':') || path.contains('?') {
        return;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let _ = opts.open(path);
}

/// One more connection to the database `pool` opened (already created and migrated),
/// established now, on the calling thread.
pub async fn dedicated(pool: &SqlitePool) -> Result<SqlitePool> {
    let opts = (*pool.connect_options()).clone();
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(|e| Error::Database(format!("audit writer connection: {e}")))
}

pub async fn begin_write(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>> {
    Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
}

pub async fn tail(tx: &mut Transaction<'static, Sqlite>) -> Result<Option<(u64, Hash)>> {
    let row = sqlx::query("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| {
        let seq: i64 = r.try_get(0)?;
        let h: &[u8] = r.try_get(1)?;
        Ok((seq as u64, hash32(seq as u64, "hash", h)?))
    })
    .transpose()
}

fn checkpoint_row(r: &sqlx::sqlite::SqliteRow) -> Result<StoredCheckpoint> {
    checkpoint_from(
        r.try_get(0)?,
        r.try_get::<&[u8], _>(1)?,
        r.try_get::<&[u8], _>(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
        r.try_get(5)?,
        r.try_get(6)?,
    )
}

const CP_COLUMNS: &str = "tree_size, root, last_hash, frontier, time_ns, key_id, signature";

pub async fn latest_checkpoint(
    tx: &mut Transaction<'static, Sqlite>,
) -> Result<Option<StoredCheckpoint>> {
    let q = format!("SELECT {CP_COLUMNS} FROM checkpoints ORDER BY tree_size DESC LIMIT 1");
    let row = sqlx::query(&q).fetch_optional(&mut **tx).await?;
    row.as_ref().map(checkpoint_row).transpose()
}

pub async fn checkpoints(pool: &SqlitePool) -> Result<Vec<StoredCheckpoint>> {
    let q = format!("SELECT {CP_COLUMNS} FROM checkpoints ORDER BY tree_size");
    let rows = sqlx::query(&q).fetch_all(pool).await?;
    rows.iter().map(checkpoint_row).collect()
}

pub async fn last_seq(pool: &SqlitePool) -> Result<Option<u64>> {
    let v: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(v.map(|v| v as u64))
}

pub async fn first_seq(pool: &SqlitePool) -> Result<Option<u64>> {
    let v: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(v.map(|v| v as u64))
}

pub async fn hashes_after(tx: &mut Transaction<'static, Sqlite>, after: u64) -> Result<Vec<Hash>> {
    let rows = sqlx::query("SELECT seq, hash FROM events WHERE seq > ? ORDER BY seq")
        .bind(after as i64)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|r| {
            let seq: i64 = r.try_get(0)?;
            hash32(seq as u64, "hash", r.try_get::<&[u8], _>(1)?)
        })
        .collect()
}

pub async fn hashes(pool: &SqlitePool, after: u64, to: u64) -> Result<Vec<(u64, Hash)>> {
    let rows = sqlx::query("SELECT seq, hash FROM events WHERE seq > ? AND seq <= ? ORDER BY seq")
        .bind(after as i64)
        .bind(to as i64)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            let seq = r.try_get::<i64, _>(0)? as u64;
            Ok((seq, hash32(seq, "hash", r.try_get::<&[u8], _>(1)?)?))
        })
        .collect()
}

/// Inserts `records`, binding their strings by value (sqlx would copy borrowed ones to
/// hand them to its connection thread).
pub async fn insert(tx: &mut Transaction<'static, Sqlite>, records: &[Record]) -> Result<()> {
    let mut rest = records.iter().peekable();
    while rest.peek().is_some() {
        let left = rest.len();
        let size = INSERT_SIZES
            .iter()
            .copied()
            .find(|s| *s <= left)
            .unwrap_or(1);
        let mut qb: QueryBuilder<'_, Sqlite> =
            QueryBuilder::new(format!("INSERT INTO events ({COLUMNS}) "));
        qb.push_values(rest.by_ref().take(size), |mut b, r| {
            b.push_bind(r.seq as i64)
                .push_bind(r.time_ns)
                .push_bind(r.kind.as_str())
                .push_bind(r.actor.as_str())
                .push_bind(r.subject.as_str())
                .push_bind(r.action.as_str())
                .push_bind(r.outcome.as_str())
                .push_bind(r.reason.as_str())
                .push_bind(r.correlation_id.as_str())
                .push_bind(r.node.as_str())
                .push_bind(r.details.as_str())
                .push_bind(r.prev_hash.to_vec())
                .push_bind(r.hash.to_vec());
        });
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

pub async fn insert_checkpoint(
    tx: &mut Transaction<'static, Sqlite>,
    cp: &Checkpoint,
    frontier: &[u8],
) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO checkpoints ({CP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(cp.tree_size as i64)
    .bind(&cp.root[..])
    .bind(&cp.last_hash[..])
    .bind(frontier)
    .bind(cp.time_ns)
    .bind(&cp.key_id)
    .bind(&cp.signature)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn page(pool: &SqlitePool, after: u64, f: &Filter) -> Result<Vec<Record>> {
    let rows = super::page_query::<Sqlite>(after, f)
        .build()
        .fetch_all(pool)
        .await?;
    rows.iter().map(record).collect()
}

fn record(r: &sqlx::sqlite::SqliteRow) -> Result<Record> {
    let seq = r.try_get::<i64, _>(0)? as u64;
    let t = |i: usize, what: &str| -> Result<String> { text(seq, what, r.try_get::<&[u8], _>(i)?) };
    Ok(Record {
        seq,
        time_ns: r.try_get(1)?,
        kind: t(2, "kind")?,
        actor: t(3, "actor")?,
        subject: t(4, "subject")?,
        action: t(5, "action")?,
        outcome: t(6, "outcome")?,
        reason: t(7, "reason")?,
        correlation_id: t(8, "correlation_id")?,
        node: t(9, "node")?,
        details: t(10, "details")?,
        prev_hash: hash32(seq, "prev_hash", r.try_get::<&[u8], _>(11)?)?,
        hash: hash32(seq, "hash", r.try_get::<&[u8], _>(12)?)?,
    })
}

/// The anchor row's trigger checks the statement's shape (SQLite cannot check a signature;
/// `verify` does); the delete trigger then lets exactly the covered events go.
pub async fn retain(pool: &SqlitePool, up_to: u64, statement_seq: u64, now_ns: i64) -> Result<u64> {
    let mut tx = begin_write(pool).await?;
    sqlx::query(
        "INSERT INTO retention_anchor (up_to_seq, time_ns, statement_seq) VALUES (?, ?, ?)",
    )
    .bind(up_to as i64)
    .bind(now_ns)
    .bind(statement_seq as i64)
    .execute(&mut *tx)
    .await?;
    let n = sqlx::query("DELETE FROM events WHERE seq <= ?")
        .bind(up_to as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n)
}
