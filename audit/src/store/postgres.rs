//! PostgreSQL: for many nodes writing one log. Writers serialise on a transaction-scoped
//! advisory lock; a batch is one `INSERT … SELECT FROM UNNEST(…)` statement.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgPool, Postgres, Row, Transaction};

use super::{checkpoint_from, hash32, Filter, StoredCheckpoint, COLUMNS};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::event::Record;
use crate::merkle::Hash;

pub async fn open(url: &str, schema: Option<&str>) -> Result<PgPool> {
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
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await?;
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    Ok(pool)
}

pub async fn begin_write(pool: &PgPool) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('esm.audit.' || current_schema()))")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

pub async fn tail(tx: &mut Transaction<'static, Postgres>) -> Result<Option<(u64, Hash)>> {
    let row = sqlx::query("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await?;
    row.map(|r| {
        let seq: i64 = r.try_get(0)?;
        let h: Vec<u8> = r.try_get(1)?;
        Ok((seq as u64, hash32(seq as u64, "hash", &h)?))
    })
    .transpose()
}

const CP_COLUMNS: &str = "tree_size, root, last_hash, frontier, time_ns, key_id, signature";

fn checkpoint_row(r: &PgRow) -> Result<StoredCheckpoint> {
    checkpoint_from(
        r.try_get(0)?,
        &r.try_get::<Vec<u8>, _>(1)?,
        &r.try_get::<Vec<u8>, _>(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
        r.try_get(5)?,
        r.try_get(6)?,
    )
}

pub async fn latest_checkpoint(
    tx: &mut Transaction<'static, Postgres>,
) -> Result<Option<StoredCheckpoint>> {
    let q = format!("SELECT {CP_COLUMNS} FROM checkpoints ORDER BY tree_size DESC LIMIT 1");
    let row = sqlx::query(&q).fetch_optional(&mut **tx).await?;
    row.as_ref().map(checkpoint_row).transpose()
}

pub async fn checkpoints(pool: &PgPool) -> Result<Vec<StoredCheckpoint>> {
    let q = format!("SELECT {CP_COLUMNS} FROM checkpoints ORDER BY tree_size");
    let rows = sqlx::query(&q).fetch_all(pool).await?;
    rows.iter().map(checkpoint_row).collect()
}

pub async fn last_seq(pool: &PgPool) -> Result<Option<u64>> {
    let v: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(v.map(|v| v as u64))
}

pub async fn first_seq(pool: &PgPool) -> Result<Option<u64>> {
    let v: Option<i64> = sqlx::query_scalar("SELECT MIN(seq) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(v.map(|v| v as u64))
}

pub async fn hashes_after(
    tx: &mut Transaction<'static, Postgres>,
    after: u64,
) -> Result<Vec<Hash>> {
    let rows = sqlx::query("SELECT seq, hash FROM events WHERE seq > $1 ORDER BY seq")
        .bind(after as i64)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|r| {
            let seq: i64 = r.try_get(0)?;
            hash32(seq as u64, "hash", &r.try_get::<Vec<u8>, _>(1)?)
        })
        .collect()
}

pub async fn hashes(pool: &PgPool, after: u64, to: u64) -> Result<Vec<(u64, Hash)>> {
    let rows =
        sqlx::query("SELECT seq, hash FROM events WHERE seq > $1 AND seq <= $2 ORDER BY seq")
            .bind(after as i64)
            .bind(to as i64)
            .fetch_all(pool)
            .await?;
    rows.iter()
        .map(|r| {
            let seq = r.try_get::<i64, _>(0)? as u64;
            Ok((seq, hash32(seq, "hash", &r.try_get::<Vec<u8>, _>(1)?)?))
        })
        .collect()
}

pub async fn insert(tx: &mut Transaction<'static, Postgres>, records: &[Record]) -> Result<()> {
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

pub async fn insert_checkpoint(
    tx: &mut Transaction<'static, Postgres>,
    cp: &Checkpoint,
    frontier: &[u8],
) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO checkpoints ({CP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
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

pub async fn page(pool: &PgPool, after: u64, f: &Filter) -> Result<Vec<Record>> {
    let rows = super::page_query::<Postgres>(after, f)
        .build()
        .fetch_all(pool)
        .await?;
    rows.iter().map(record).collect()
}

fn record(r: &PgRow) -> Result<Record> {
    let seq = r.try_get::<i64, _>(0)? as u64;
    Ok(Record {
        seq,
        time_ns: r.try_get(1)?,
        kind: r.try_get(2)?,
        actor: r.try_get(3)?,
        subject: r.try_get(4)?,
        action: r.try_get(5)?,
        outcome: r.try_get(6)?,
        reason: r.try_get(7)?,
        correlation_id: r.try_get(8)?,
        node: r.try_get(9)?,
        details: r.try_get(10)?,
        prev_hash: hash32(seq, "prev_hash", &r.try_get::<Vec<u8>, _>(11)?)?,
        hash: hash32(seq, "hash", &r.try_get::<Vec<u8>, _>(12)?)?,
    })
}

/// Deletion goes through `esm_retain`, which checks the statement in the log and is the only
/// way past the delete trigger.
pub async fn retain(pool: &PgPool, up_to: u64, statement_seq: u64, now_ns: i64) -> Result<u64> {
    let mut tx = begin_write(pool).await?;
    let n: i64 = sqlx::query_scalar("SELECT esm_retain($1, $2, $3)")
        .bind(up_to as i64)
        .bind(statement_seq as i64)
        .bind(now_ns)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(n as u64)
}
