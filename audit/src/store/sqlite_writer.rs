//! The audit writer's SQLite connection: rusqlite, run by the writer's own thread.
//!
//! Why not sqlx here, as everywhere else: sqlx gives each SQLite connection a worker thread
//! and hands it every statement, then hands the answer back. A commit is at least four
//! statements (BEGIN IMMEDIATE, the tail check, INSERT, COMMIT), so when commits are small
//! — `authz.decision_log_mode = "sync"` with a few Checks in flight — the thread hops cost
//! more CPU than SQLite does: a profile of sync mode through Envoy put a third of esm's CPU
//! on sqlx's worker and much of the writer's own in futex wake-ups. Here the writer thread
//! runs SQLite itself; it has nothing else to do while a batch commits.
//!
//! The database is the one sqlx opened and migrated ([`super::Db::open`]): same file, same
//! schema and triggers, and this connection sets what sqlx sets per connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::dialect::sql;
use super::page::hash32;
use super::{StoredCheckpoint, COLUMNS, CP_COLUMNS};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::event::Record;
use crate::merkle::Hash;

/// One row per statement: prepared once, each row costs a bind and a step, with no thread
/// between the writer and SQLite.
static INSERT_ONE: LazyLock<String> = LazyLock::new(|| {
    let marks: Vec<String> = (1..=13).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO events ({COLUMNS}) VALUES ({})",
        marks.join(", ")
    )
});

static LATEST_CHECKPOINT: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {CP_COLUMNS} FROM checkpoints ORDER BY tree_size DESC LIMIT 1")
});

/// The writer's connection to the database file at `path`.
pub struct Conn {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl Conn {
    /// Opens the (already created and migrated) database at `path` as sqlx's connections
    /// are: `synchronous = FULL`, foreign keys on, a 10 s wait for another writer. The
    /// journal mode belongs to the file (WAL, set by [`super::sqlite::connect`]). A file the
    /// writer cannot write to is refused here, at start, rather than by the first batch.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let err = |source| Error::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10))
            .and_then(|()| conn.pragma_update(None, "synchronous", "FULL"))
            .and_then(|()| conn.pragma_update(None, "foreign_keys", "ON"))
            .map_err(err)?;
        if conn
            .is_readonly(rusqlite::DatabaseName::Main)
            .map_err(err)?
        {
            return Err(Error::Database(format!(
                "{}: the audit writer cannot write to it",
                path.display()
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Ends whatever transaction the connection is still in (a failed COMMIT that could not
    /// be rolled back then), so that it does not keep the write lock while the writer
    /// tries to open another.
    pub(crate) fn abandon(&self) {
        let tx = DirectTx {
            path: self.path.clone(),
            conn: self.conn.clone(),
            open: false,
        };
        tx.rollback();
    }

    /// `BEGIN IMMEDIATE`: the log's write lock until the transaction ends.
    pub(crate) fn begin(&self) -> Result<DirectTx> {
        let mut tx = DirectTx {
            path: self.path.clone(),
            conn: self.conn.clone(),
            open: false,
        };
        tx.run(|c| c.execute_batch("BEGIN IMMEDIATE"))?;
        tx.open = true;
        Ok(tx)
    }
}

/// A write transaction on [`Conn`]; dropped unfinished, it rolls back.
pub struct DirectTx {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    open: bool,
}

impl DirectTx {
    fn run<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| Error::Bug("audit writer connection lock poisoned".into()))?;
        f(&conn).map_err(|source| Error::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    pub(crate) fn tail(&self) -> Result<Option<(u64, Hash)>> {
        let row = self.run(|c| {
            c.prepare_cached(sql::TAIL)?
                .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
                .optional()
        })?;
        row.map(|(seq, h)| Ok((seq as u64, hash32(seq as u64, "hash", &h)?)))
            .transpose()
    }

    pub(crate) fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        let row = self.run(|c| {
            c.prepare_cached(&LATEST_CHECKPOINT)?
                .query_row([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Vec<u8>>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Vec<u8>>(6)?,
                    ))
                })
                .optional()
        })?;
        row.map(|(size, root, last, frontier, time_ns, key_id, signature)| {
            StoredCheckpoint::from_columns(size, &root, &last, frontier, time_ns, key_id, signature)
        })
        .transpose()
    }

    /// Event hashes with seq > `after`, in order.
    pub(crate) fn hashes_after(&self, after: u64) -> Result<Vec<Hash>> {
        let rows = self.run(|c| {
            let mut stmt = c.prepare_cached(sql::HASHES)?;
            let rows = stmt.query_map([after as i64, i64::MAX], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.iter()
            .map(|(seq, h)| hash32(*seq as u64, "hash", h))
            .collect()
    }

    pub(crate) fn insert(&self, records: &[Record]) -> Result<()> {
        self.run(|c| {
            let mut stmt = c.prepare_cached(&INSERT_ONE)?;
            for (i, r) in records.iter().enumerate() {
                crate::background::give_way(i);
                stmt.execute(params![
                    r.seq as i64,
                    r.time_ns,
                    r.kind,
                    r.actor,
                    r.subject,
                    r.action,
                    r.outcome,
                    r.reason,
                    r.correlation_id,
                    r.node,
                    r.details,
                    r.prev_hash.as_slice(),
                    r.hash.as_slice(),
                ])?;
            }
            Ok(())
        })
    }

    pub(crate) fn insert_checkpoint(&self, cp: &Checkpoint, frontier: &[u8]) -> Result<()> {
        self.run(|c| {
            c.prepare_cached(sql::INSERT_CHECKPOINT)?.execute(params![
                cp.tree_size as i64,
                cp.root.as_slice(),
                cp.last_hash.as_slice(),
                frontier,
                cp.time_ns,
                cp.key_id,
                cp.signature,
            ])
        })
        .map(drop)
    }

    /// A COMMIT that fails (SQLITE_FULL, an I/O error) can leave the transaction open with
    /// the write lock held; it is rolled back here, so the writer never stays inside one.
    pub(crate) fn commit(mut self) -> Result<()> {
        self.open = false;
        let done = self.run(|c| c.execute_batch("COMMIT"));
        if done.is_err() {
            self.rollback();
        }
        done
    }

    fn rollback(&self) {
        let rolled = self.run(|c| {
            if c.is_autocommit() {
                return Ok(());
            }
            c.execute_batch("ROLLBACK")
        });
        if let Err(e) = rolled {
            // The next BEGIN then fails too, and the writer replaces the connection.
            tracing::warn!(error = %e, "audit writer could not roll back");
        }
    }
}

impl Drop for DirectTx {
    fn drop(&mut self) {
        if self.open {
            self.rollback();
        }
    }
}
