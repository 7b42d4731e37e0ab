//! Reading a long stretch of the log (verification, reports) as fast as the database hands
//! rows out. The stretch is cut into fixed ranges of sequence numbers; `lanes` readers take
//! every `lanes`-th range each and read ahead into small bounded channels, hashing each
//! page's events as they go, while the consumer takes the pages back in order and hands
//! spent ones back to be filled again. Memory is `lanes × (LANE_DEPTH + 2) + 1` pages
//! (spares included) whatever the log's size; a consumer that stops early drops the
//! [`Scan`] and the readers stop at their next page.
//!
//! A range with a missing or extra event still comes back as read: the consumer's walk is
//! what notices a broken sequence. A row that cannot be an event ends its lane with the
//! rows before it and the error, which the consumer gets after those rows, in order.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::page::Page;
use super::{Db, Filter};
use crate::error::{Error, Result};

/// Events per range (and so per page).
pub const SCAN_PAGE: u64 = 8192;
/// Pages each lane may have read ahead of the consumer.
const LANE_DEPTH: usize = 2;

#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    /// Readers working at once (at least 1).
    pub lanes: usize,
    /// Recompute every event's hash on the readers ([`super::RecordRef::recomputed`]).
    pub hashes: bool,
    /// Sequence numbers per range (and so events per page at most).
    pub page: u64,
    /// PostgreSQL ranges are read with `COPY … (FORMAT binary)` ([`super::pg_copy`]);
    /// false reads them with a `SELECT`, as before (kept to measure one against the other).
    pub pg_copy: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            lanes: 2,
            hashes: true,
            page: SCAN_PAGE,
            pg_copy: true,
        }
    }
}

/// What a lane hands over: a page and, when the lane stopped inside it, why.
pub(crate) type Sent = (Page, Option<Error>);

/// Pages the consumer is done with, for the readers to fill again ([`Scan::recycle`]); at
/// most `lanes` are kept, so memory stays `lanes × (LANE_DEPTH + 2) + 1` pages (queued,
/// being filled, spare; and the consumer's).
#[derive(Debug, Clone, Default)]
pub(crate) struct Spares(Arc<Mutex<Vec<Page>>>);

impl Spares {
    pub(crate) fn take(&self) -> Option<Page> {
        self.0.lock().ok()?.pop()
    }

    fn put(&self, page: Page, keep: usize) {
        if let Ok(mut spares) = self.0.lock() {
            if spares.len() < keep {
                spares.push(page);
            }
        }
    }
}

/// The ranges lane `lane` of `lanes` reads, in order: `(after, to]` each.
pub(crate) fn lane_ranges(
    after: u64,
    to: u64,
    page: u64,
    lane: usize,
    lanes: usize,
) -> impl Iterator<Item = (u64, u64)> {
    let page = page.max(1);
    (lane as u64..range_count(after, to, page))
        .step_by(lanes.max(1))
        .map(move |i| (after + i * page, (after + (i + 1) * page).min(to)))
}

fn range_count(after: u64, to: u64, page: u64) -> u64 {
    to.saturating_sub(after).div_ceil(page.max(1))
}

/// Pages of events, in sequence order; see the module doc.
pub struct Scan {
    lanes: Vec<mpsc::Receiver<Sent>>,
    /// Ranges still to be received, to tell a finished scan from a reader that died.
    left: u64,
    next: usize,
    failed: Option<Error>,
    done: bool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    spares: Spares,
}

impl Scan {
    /// Starts the readers for `after < seq <= to`.
    pub(crate) fn start(db: &Db, after: u64, to: u64, opts: ScanOptions) -> Self {
        let lanes = opts.lanes.max(1);
        let mut receivers = Vec::with_capacity(lanes);
        let mut tasks = Vec::new();
        let spares = Spares::default();
        let file = match db {
            Db::Sqlite(p) => super::sqlite_scan::file_of(p),
            Db::Postgres(_) => None,
        };
        for lane in 0..lanes {
            let (tx, rx) = mpsc::channel(LANE_DEPTH);
            receivers.push(rx);
            let ranges = lane_ranges(after, to, opts.page, lane, lanes);
            match &file {
                Some(path) => {
                    let (path, spares) = (path.clone(), spares.clone());
                    tasks.push(tokio::task::spawn_blocking(move || {
                        super::sqlite_scan::lane(&path, ranges, opts, &tx, &spares)
                    }));
                }
                None => {
                    let (db, spares) = (db.clone(), spares.clone());
                    let ranges: Vec<(u64, u64)> = ranges.collect();
                    tasks.push(tokio::spawn(async move {
                        async_lane(db, ranges, opts, tx, spares).await
                    }));
                }
            }
        }
        Self {
            lanes: receivers,
            left: range_count(after, to, opts.page),
            next: 0,
            failed: None,
            done: false,
            tasks,
            spares,
        }
    }

    /// Hands a page the caller is done with back to the readers, which fill it again
    /// instead of allocating the next one.
    pub fn recycle(&self, page: Page) {
        self.spares.put(page, self.lanes.len());
    }

    /// The next page (possibly empty: a range with no events), the error that stopped the
    /// scan, or `None` after the last.
    pub async fn next(&mut self) -> Option<Result<Page>> {
        if let Some(e) = self.failed.take() {
            self.done = true;
            return Some(Err(e));
        }
        if self.done || self.left == 0 {
            return None;
        }
        let lanes = self.lanes.len();
        let received = self.lanes.get_mut(self.next)?.recv().await;
        let Some((page, err)) = received else {
            self.done = true;
            return Some(Err(Error::Bug(
                "an audit store reader stopped early".into(),
            )));
        };
        self.left -= 1;
        self.next = (self.next + 1) % lanes;
        self.failed = err;
        Some(Ok(page))
    }
}

impl Drop for Scan {
    fn drop(&mut self) {
        // Blocking readers stop when their channel closes; async ones are stopped here.
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A lane through the store's own driver: PostgreSQL, or SQLite when it is not a file.
async fn async_lane(
    db: Db,
    ranges: Vec<(u64, u64)>,
    opts: ScanOptions,
    tx: mpsc::Sender<Sent>,
    spares: Spares,
) {
    let hashes = opts.hashes;
    let mut copy = match &db {
        Db::Postgres(pool) if opts.pg_copy => match super::pg_copy::lane_connection(pool).await {
            Ok(c) => Some(c),
            Err(e) => {
                let _ = tx.send((Page::default(), Some(e))).await;
                return;
            }
        },
        _ => None,
    };
    for (after, to) in ranges {
        let filter = Filter {
            to_seq: Some(to),
            ..Filter::default()
        };
        let (mut page, err) = match copy.as_mut() {
            Some(conn) => super::pg_copy::copy_page(conn, after, to, spares.take()).await,
            None => db.read_page(after, filter, (to - after) as usize).await,
        };
        if hashes {
            page = match tokio::task::spawn_blocking(move || {
                page.recompute_hashes();
                page
            })
            .await
            {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx
                        .send((Page::default(), Some(Error::Bug(format!("hashing: {e}")))))
                        .await;
                    return;
                }
            };
        }
        let stop = err.is_some();
        if tx.send((page, err)).await.is_err() || stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_cover_the_range_once_in_turn() {
        let all: Vec<Vec<(u64, u64)>> = (0..3)
            .map(|l| lane_ranges(5, 5 + 7 * SCAN_PAGE + 3, SCAN_PAGE, l, 3).collect())
            .collect();
        let mut merged = Vec::new();
        for i in 0..8 {
            merged.push(all[i % 3][i / 3]);
        }
        assert_eq!(all.iter().map(Vec::len).sum::<usize>(), 8);
        assert_eq!(merged[0], (5, 5 + SCAN_PAGE));
        assert_eq!(merged[7], (5 + 7 * SCAN_PAGE, 5 + 7 * SCAN_PAGE + 3));
        for w in merged.windows(2) {
            assert_eq!(w[0].1, w[1].0);
        }
    }

    #[test]
    fn an_empty_stretch_has_no_ranges() {
        assert_eq!(lane_ranges(10, 10, 4, 0, 2).count(), 0);
        assert_eq!(lane_ranges(10, 3, 4, 0, 2).count(), 0);
    }
}
