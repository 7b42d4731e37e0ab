//! The PostgreSQL scan lane's reader: a range of events as `COPY (SELECT …) TO STDOUT
//! (FORMAT binary)`, parsed straight from the wire into a [`Page`]. A `SELECT` through sqlx
//! decodes every row into a row object and every column through its type check first;
//! verifying and reporting over millions of events spent a fifth of their client time there.
//!
//! The binary COPY format: an 11-byte signature, a flags word and a header extension, then
//! per row a 16-bit field count and per field a 32-bit length (−1 for NULL) and its bytes
//! in the column type's binary form (`bigint`: 8 bytes big-endian; `text`: its UTF-8;
//! `bytea`: the bytes), and a field count of −1 at the end. Anything else is the database's
//! fault and ends the page with the rows before it, as a failed `SELECT` would.

use futures_util::StreamExt;
use sqlx::{ConnectOptions, PgConnection, PgPool};

use super::page::{Page, PageBuilder, TEXT_FIELDS};
use super::COLUMNS;
use crate::error::{Error, Result};

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";
/// seq, time_ns, nine text fields, prev_hash, hash.
const FIELDS: i16 = 13;

fn broken(reason: impl Into<String>) -> Error {
    Error::Database(format!("COPY of the events: {}", reason.into()))
}

/// A connection of the lane's own, outside the pool: a scan dropped early aborts its lanes
/// in the middle of a COPY, and a connection left in that state must be closed with the
/// lane, never handed to the next user of the pool.
///
/// Its queries are short index range scans: JIT compilation, which PostgreSQL starts when
/// stale statistics overestimate a range, would cost more than the range itself.
pub(crate) async fn lane_connection(pool: &PgPool) -> Result<PgConnection> {
    let mut conn = pool.connect_options().connect().await?;
    sqlx::query("SET jit = off").execute(&mut conn).await?;
    Ok(conn)
}

/// The events with `after < seq <= to`, in order.
pub(crate) async fn copy_page(
    conn: &mut PgConnection,
    after: u64,
    to: u64,
    spare: Option<Page>,
) -> (Page, Option<Error>) {
    let bound = |v: u64| v.min(i64::MAX as u64);
    // Integers, formatted: COPY takes no bind parameters. The LIMIT makes the planner
    // walk the primary key in order; without it, a COPY of a range was planned as a
    // parallel bitmap scan and a sort, 2.5 times slower than the SELECT it replaced.
    let sql = format!(
        "COPY (SELECT {COLUMNS} FROM events WHERE seq > {} AND seq <= {} ORDER BY seq \
         LIMIT {}) TO STDOUT (FORMAT binary)",
        bound(after),
        bound(to),
        bound(to.saturating_sub(after))
    );
    let capacity = to.saturating_sub(after).min(1 << 20) as usize;
    let mut parser = CopyParser::reusing(spare, capacity);
    let mut stream = match conn.copy_out_raw(&sql).await {
        Ok(s) => s,
        Err(e) => return (Page::default(), Some(e.into())),
    };
    while let Some(chunk) = stream.next().await {
        let fed = match chunk {
            Ok(bytes) => parser.feed(&bytes),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = fed {
            return parser.finish_partial(e);
        }
    }
    parser.finish()
}

/// Parses binary COPY data fed in chunks of any size into a page.
pub(crate) struct CopyParser {
    builder: PageBuilder,
    /// Bytes of an incomplete header or row carried to the next chunk.
    pending: Vec<u8>,
    header_read: bool,
    ended: bool,
}

impl CopyParser {
    #[cfg(test)]
    pub(crate) fn new(rows: usize) -> Self {
        Self::reusing(None, rows)
    }

    /// A parser filling `spare`'s buffers again when there is one ([`PageBuilder::reusing`]).
    pub(crate) fn reusing(spare: Option<Page>, rows: usize) -> Self {
        Self {
            builder: PageBuilder::reusing(spare, rows),
            pending: Vec::new(),
            header_read: false,
            ended: false,
        }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        if self.pending.is_empty() {
            // The usual case: the server sends whole rows; no copy of them is made.
            let used = self.parse(chunk)?;
            self.pending
                .extend_from_slice(chunk.get(used..).unwrap_or_default());
            return Ok(());
        }
        self.pending.extend_from_slice(chunk);
        let pending = std::mem::take(&mut self.pending);
        let used = self.parse(&pending)?;
        self.pending = pending.get(used..).unwrap_or_default().to_vec();
        Ok(())
    }

    /// Parses every complete piece at the start of `buf`; returns how many bytes it used.
    fn parse(&mut self, buf: &[u8]) -> Result<usize> {
        let mut at = 0;
        if !self.header_read {
            let Some(len) = header_len(buf)? else {
                return Ok(0);
            };
            at = len;
            self.header_read = true;
        }
        while !self.ended {
            match self.row(buf.get(at..).unwrap_or_default())? {
                Some(used) => at += used,
                None => break,
            }
        }
        if self.ended && at < buf.len() {
            return Err(broken("data after the end marker"));
        }
        Ok(at)
    }

    /// One row (or the end marker) from the start of `buf`: the bytes it took, or None when
    /// `buf` holds only part of it (nothing is added to the page then).
    fn row(&mut self, buf: &[u8]) -> Result<Option<usize>> {
        let Some(count) = buf.get(..2) else {
            return Ok(None);
        };
        let count = i16::from_be_bytes([count[0], count[1]]);
        if count == -1 {
            self.ended = true;
            return Ok(Some(2));
        }
        if count != FIELDS {
            return Err(broken(format!("a row of {count} fields, not {FIELDS}")));
        }
        // Find the fields first, so a row split across chunks is not half added.
        let mut fields: [&[u8]; FIELDS as usize] = [&[]; FIELDS as usize];
        let mut at = 2;
        for (i, f) in fields.iter_mut().enumerate() {
            let Some(len) = buf.get(at..at + 4) else {
                return Ok(None);
            };
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            at += 4;
            if len < 0 {
                return Err(broken(format!("column {} is NULL", column_name(i))));
            }
            let Some(bytes) = buf.get(at..at + len as usize) else {
                return Ok(None);
            };
            *f = bytes;
            at += len as usize;
        }
        let int = |i: usize| -> Result<i64> {
            let b: [u8; 8] = fields[i]
                .try_into()
                .map_err(|_| broken(format!("{} is not a bigint", column_name(i))))?;
            Ok(i64::from_be_bytes(b))
        };
        self.builder.row(int(0)? as u64, int(1)?);
        for text in &fields[2..11] {
            self.builder.text(text)?;
        }
        self.builder.hashes(fields[11], fields[12])?;
        Ok(Some(at))
    }

    /// The page, once the data ended as the format says it must.
    pub(crate) fn finish(self) -> (Page, Option<Error>) {
        let err = match (self.ended, self.pending.is_empty(), self.header_read) {
            (true, true, _) => None,
            (false, true, false) => Some(broken("no data, not even a header")),
            (false, true, true) => Some(broken("the data ended before its end marker")),
            _ => Some(broken("the data ended inside a row")),
        };
        let (page, bad) = self.builder.finish();
        (page, bad.or(err))
    }

    /// The rows read before `failure` (or before text that is not UTF-8, an earlier row).
    pub(crate) fn finish_partial(self, failure: Error) -> (Page, Option<Error>) {
        let (page, bad) = self.builder.finish();
        (page, Some(bad.unwrap_or(failure)))
    }
}

/// The name of column `i` of [`COLUMNS`], for an error.
fn column_name(i: usize) -> &'static str {
    match i {
        0 => "seq",
        1 => "time_ns",
        11 => "prev_hash",
        12 => "hash",
        i => TEXT_FIELDS.get(i.wrapping_sub(2)).copied().unwrap_or("?"),
    }
}

/// The header's length once `buf` holds all of it.
fn header_len(buf: &[u8]) -> Result<Option<usize>> {
    let Some(sig) = buf.get(..11) else {
        return Ok(None);
    };
    if sig != SIGNATURE {
        return Err(broken("not binary COPY data"));
    }
    let Some(ext) = buf.get(15..19) else {
        return Ok(None);
    };
    let ext = u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]) as usize;
    if ext > 1 << 16 {
        return Err(broken("a header extension larger than 64 KiB"));
    }
    Ok((buf.len() >= 19 + ext).then_some(19 + ext))
}

#[cfg(test)]
#[path = "pg_copy_tests.rs"]
mod tests;
