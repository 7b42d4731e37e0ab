//! The SQLite scan lane: a read-only connection of its own, through rusqlite.
//!
//! Why a second binding to the same SQLite library (both link the one `libsqlite3-sys`):
//! sqlx's SQLite driver copies every value of every row (`sqlite3_value_dup`, one allocation
//! and one `Arc` per column) and hands rows one by one to the caller's thread, and it offers
//! no borrowed access without `unsafe` FFI, which this workspace forbids. Over a 10-million
//! event store that cost 4.8 µs of CPU per row against 0.7 µs for reading the same columns
//! in place here.

use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Statement};
use tokio::sync::mpsc;

use super::page::{tampered, Page, PageBuilder};
use super::scan::{ScanOptions, Sent, Spares};
use super::COLUMNS;
use crate::error::{Error, Result};

/// Pages SQLite caches per reader (negative: KiB). A scan reads every page once, so a
/// cache only has to hold a B-tree path; 8 MiB keeps the interior pages. (A memory-mapped
/// file read about a quarter faster per row, but its pages count in the process's RSS: a
/// 4.5 GiB store made `verify` a 2.2 GiB process.)
const CACHE_KIB: i64 = 8 * 1024;

/// The database file behind `pool`, when it is one (not an in-memory database).
pub(crate) fn file_of(pool: &sqlx::SqlitePool) -> Option<PathBuf> {
    let path = pool.connect_options().get_filename().to_path_buf();
    path.is_file().then_some(path)
}

/// Reads `ranges` in order into `tx`, stopping at the first failure (sent after the rows
/// before it) or when the consumer hangs up.
pub(crate) fn lane(
    path: &Path,
    ranges: impl Iterator<Item = (u64, u64)>,
    opts: ScanOptions,
    tx: &mpsc::Sender<Sent>,
    spares: &Spares,
) {
    let conn = match connect(path) {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.blocking_send((Page::default(), Some(e)));
            return;
        }
    };
    let sql = format!("SELECT {COLUMNS} FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq");
    let mut stmt = match conn.prepare(&sql) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.blocking_send((Page::default(), Some(error(path, e))));
            return;
        }
    };
    for (after, to) in ranges {
        let mut b = PageBuilder::reusing(spares.take(), (to - after) as usize);
        if opts.hashes {
            b = b.hashing();
        }
        let err = read(&mut stmt, after, to, &mut b)
            .map_err(|e| match e {
                Failure::Sqlite(e) => error(path, e),
                Failure::Store(e) => e,
            })
            .err();
        // Text that is not UTF-8 is in a row before the one a read failed in.
        let (page, bad) = b.finish();
        let err = bad.or(err);
        let stop = err.is_some();
        if tx.blocking_send((page, err)).is_err() || stop {
            return;
        }
    }
}

fn connect(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| error(path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .and_then(|()| conn.pragma_update(None, "cache_size", -CACHE_KIB))
        .map_err(|e| error(path, e))?;
    Ok(conn)
}

fn error(path: &Path, source: rusqlite::Error) -> Error {
    Error::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

enum Failure {
    Sqlite(rusqlite::Error),
    Store(Error),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Store(e)
    }
}

/// One range's rows into `b`, each value read in place.
fn read(stmt: &mut Statement<'_>, after: u64, to: u64, b: &mut PageBuilder) -> Result<(), Failure> {
    let mut rows = stmt.query([after as i64, to.min(i64::MAX as u64) as i64])?;
    while let Some(r) = rows.next()? {
        let seq = match r.get_ref(0)? {
            ValueRef::Integer(s) => s as u64,
            _ => return Err(Error::Bug("events.seq is not an integer".into()).into()),
        };
        let wrong = |what: &str| tampered(seq, format!("{what} has the wrong type"));
        match r.get_ref(1)? {
            ValueRef::Integer(t) => b.row(seq, t),
            _ => return Err(wrong("time_ns").into()),
        }
        for (i, what) in super::page::TEXT_FIELDS.iter().enumerate() {
            b.text(bytes(r.get_ref(2 + i)?).ok_or_else(|| wrong(what))?)?;
        }
        let prev = bytes(r.get_ref(11)?).ok_or_else(|| wrong("prev_hash"))?;
        b.hashes(prev, bytes(r.get_ref(12)?).ok_or_else(|| wrong("hash"))?)?;
    }
    Ok(())
}

/// A TEXT or BLOB value's bytes, as sqlx reads either into `&[u8]`.
fn bytes(v: ValueRef<'_>) -> Option<&[u8]> {
    match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => Some(b),
        _ => None,
    }
}
