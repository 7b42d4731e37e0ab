//! The writer, which runs its SQLite connection on its own thread, works below the request
//! path's priority, and the rest of the process keeps its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![cfg(target_os = "linux")]

mod common;

use common::{event, writer, Backend};
use esm_audit::checkpoint::SigningKey;
use esm_audit::writer::{WriterOptions, WRITER_THREAD};

/// (name, nice) of a thread from its `/proc/…/stat`.
fn name_and_nice(stat_path: &std::path::Path) -> Option<(String, i64)> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
    // After the name: state is field 3; nice is field 19.
    let nice = rest.split(' ').nth(16)?.parse().ok()?;
    Some((name.to_owned(), nice))
}

/// (name, nice) of every thread of this process.
fn threads() -> Vec<(String, i64)> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| name_and_nice(&t.ok()?.path().join("stat")))
        .collect()
}

#[tokio::test]
async fn writer_runs_its_sqlite_work_at_the_configured_nice_value() {
    let b = Backend::sqlite();
    let opts = WriterOptions {
        nice: 7,
        ..Default::default()
    };
    let db = b.open().await;
    let (sink, handle) = writer(db.clone(), SigningKey::ephemeral().unwrap(), opts).await;
    sink.record(event(0)).await.unwrap();
    // A reader on the pool the process opened, as `esm serve`'s admin API is.
    assert_eq!(db.last_seq().await.unwrap(), Some(1));
    let all = threads();
    let writer_nice: Vec<_> = all.iter().filter(|(n, _)| n == WRITER_THREAD).collect();
    assert!(writer_nice.iter().any(|(_, nice)| *nice == 7), "{all:?}");
    // The writer has no connection thread of its own; the readers' pool, opened on a
    // runtime thread, keeps the process's priority.
    let sqlite: Vec<i64> = all
        .iter()
        .filter(|(n, _)| n.starts_with("sqlx-sqlite"))
        .map(|(_, nice)| *nice)
        .collect();
    assert!(
        !sqlite.is_empty() && sqlite.iter().all(|n| *n == 0),
        "{all:?}"
    );
    let this = name_and_nice("/proc/thread-self/stat".as_ref()).unwrap();
    assert_eq!(this.1, 0, "the producer's thread keeps its priority");
    handle.shutdown().await.unwrap();
}
