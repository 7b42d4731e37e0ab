//! PostgreSQL: for many nodes writing one log. Writers serialise on a transaction-scoped
//! advisory lock; a batch is one `INSERT … SELECT FROM UNNEST(…)` statement.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgPool, Postgres, Row, Transaction};

use super::dialect::Dialect;
use super::COLUMNS;
use crate::error::{Error, Result};
use crate::event::Record;

/// Connects to the database at `url`, with `schema` (made if missing) first on the search
/// path of every connection.
pub async fn connect(url: &str, schema: Option<&str>) -> Result<PgPool> {
    let mut opts =
        PgConnectOptions::from_str(url).map_err(|e| Error::Config(format!("audit.url: {e}")))?;
    if let Some(schema) = schema {
        let ok = !schema.is_empty()
            && schema.len() <= 63
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !schema.as_bytes()[0].is_ascii_digit();
        if !ok {
            return Err(Error::Config(format!(
                "audit.schema {schema:?}: use lowercase letters, digits and _"
            )));
        }
        let mut conn = sqlx::PgConnection::connect_with(&opts).await?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        opts = opts.options([("search_path", schema)]);
    }
    Ok(PgPoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await?)
}

/// The audit tables' schema history.
/// Versions below 1000; the registration entries' (esm-agent, from 1001) share the
/// migration table and are ignored here.
pub static MIGRATIONS: Migrator = Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("./migrations/postgres")
};

impl Dialect for Postgres {
    async fn begin_write(pool: &PgPool) -> Result<Transaction<'static, Postgres>> {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('esm.audit.' || current_schema()))")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// One `INSERT … SELECT FROM UNNEST(…)`: a column array per field, whatever the batch.
    async fn insert(tx: &mut Transaction<'static, Postgres>, records: &[Record]) -> Result<()> {
        let col = |f: fn(&Record) -> &str| records.iter().map(f).collect::<Vec<&str>>();
        let seqs: Vec<i64> = records.iter().map(|r| r.seq as i64).collect();
        let times: Vec<i64> = records.iter().map(|r| r.time_ns).collect();
        let prev: Vec<&[u8]> = records.iter().map(|r| &r.prev_hash[..]).collect();
        let hash: Vec<&[u8]> = records.iter().map(|r| &r.hash[..]).collect();
        sqlx::query(&format!(
            "INSERT INTO events ({COLUMNS}) SELECT * FROM UNNEST($1::bigint[], $2::bigint[], \
             $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], \
             $10::text[], $11::text[], $12::bytea[], $13::bytea[])"
        ))
        .bind(seqs)
        .bind(times)
        .bind(col(|r| &r.kind))
        .bind(col(|r| &r.actor))
        .bind(col(|r| &r.subject))
        .bind(col(|r| &r.action))
        .bind(col(|r| &r.outcome))
        .bind(col(|r| &r.reason))
        .bind(col(|r| &r.correlation_id))
        .bind(col(|r| &r.node))
        .bind(col(|r| &r.details))
        .bind(prev)
        .bind(hash)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Deletion goes through `esm_retain`, which checks the statement in the log and is the
    /// only way past the delete trigger.
    async fn retain(pool: &PgPool, up_to: u64, statement_seq: u64, now_ns: i64) -> Result<u64> {
        let mut tx = Self::begin_write(pool).await?;
        let n: i64 = sqlx::query_scalar("SELECT esm_retain($1, $2, $3)")
            .bind(up_to as i64)
            .bind(statement_seq as i64)
            .bind(now_ns)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n as u64)
    }

    /// The column's bytes as the server sent them, without sqlx's type check and UTF-8
    /// validation: the page builder validates once (both cost 8 % of a verify's CPU).
    /// Results come in the binary format, where `text` is its UTF-8 bytes; a column of
    /// another type would fail that validation or the hash, never pass as text.
    fn text(row: &PgRow, i: usize) -> std::result::Result<&[u8], sqlx::Error> {
        row.try_get_unchecked(i)
    }
}
