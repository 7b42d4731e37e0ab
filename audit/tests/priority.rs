//! The writer and its SQLite connection run below the request path's priority, and the
//! rest of the process keeps its own.
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
async fn writer_and_its_sqlite_connection_run_at_the_configured_nice_value() {
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
    // The writer's own connection worker inherited the value; the readers' pool, opened
    // on a runtime thread, did not.
    let sqlite: Vec<i64> = all
        .iter()
        .filter(|(n, _)| n.starts_with("sqlx-sqlite"))
        .map(|(_, nice)| *nice)
        .collect();
    assert!(sqlite.contains(&7) && sqlite.contains(&0), "{all:?}");
    let this = name_and_nice("/proc/thread-self/stat".as_ref()).unwrap();
    assert_eq!(this.1, 0, "the producer's thread keeps its priority");
    handle.shutdown().await.unwrap();
}
