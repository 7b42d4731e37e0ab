//! SQLite: WAL, `synchronous = FULL` (a commit survives power loss, not only a crash), one
//! writer at a time through `BEGIN IMMEDIATE`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};

use super::dialect::Dialect;
use super::COLUMNS;
use crate::error::{Error, Result};
use crate::event::Record;

/// Rows per INSERT, largest first: every batch is cut into these few sizes, so the
/// connection's statement cache holds each statement once instead of SQLite parsing a new
/// one for every batch size. 256 rows bind 3,328 values (SQLite allows 32,766).
const INSERT_SIZES: [usize; 5] = [256, 64, 16, 4, 1];

/// Connects to the database at `path`, creating it if missing. With `check`, SQLite first reads the
/// whole file (`PRAGMA quick_check`), so a damaged store fails here, before a writer appends
/// to it; that costs a read of every page (13 s for a 4.5 GiB store), which commands that
/// only read skip: every page they need is checked by SQLite as it is read, and every row
/// by its hash.
pub async fn connect(path: &str, check: bool) -> Result<SqlitePool> {
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
        .map_err(open_error(path))?;
    // A file that is not a database, or is damaged, fails here with a clear message.
    let probe = if check {
        "PRAGMA quick_check"
    } else {
        "SELECT 'ok' FROM sqlite_schema LIMIT 1"
    };
    let found: Option<String> = sqlx::query_scalar(probe)
        .fetch_optional(&pool)
        .await
        .map_err(open_error(path))?;
    if let Some(damage) = found.filter(|f| f != "ok") {
        return Err(Error::Database(format!("{path}: damaged: {damage}")));
    }
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

/// Keeps sqlx's error as the source of the open failure of `path`.
fn open_error(path: &str) -> impl FnOnce(sqlx::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Open { path, source }
}

/// The audit tables' schema history.
/// Versions below 1000; the registration entries' (esm-agent, from 1001) share the
/// migration table and are ignored here.
pub static MIGRATIONS: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/sqlite")
};

impl Dialect for Sqlite {
    async fn begin_write(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>> {
        Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Multi-row INSERTs in [`INSERT_SIZES`] rows, binding strings by value (sqlx would
    /// copy borrowed ones to hand them to its connection thread).
    async fn insert(tx: &mut Transaction<'static, Sqlite>, records: &[Record]) -> Result<()> {
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

    /// The anchor row's trigger checks the statement's shape (SQLite cannot check a
    /// signature; `verify` does); the delete trigger then lets exactly the covered events go.
    async fn retain(pool: &SqlitePool, up_to: u64, statement_seq: u64, now_ns: i64) -> Result<u64> {
        let mut tx = Self::begin_write(pool).await?;
        sqlx::query(
            "INSERT INTO retention_anchor (up_to_seq, time_ns, statement_seq) VALUES ($1, $2, $3)",
        )
        .bind(up_to as i64)
        .bind(now_ns)
        .bind(statement_seq as i64)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query("DELETE FROM events WHERE seq <= $1")
            .bind(up_to as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    fn text(row: &SqliteRow, i: usize) -> std::result::Result<&[u8], sqlx::Error> {
        row.try_get(i)
    }
}
