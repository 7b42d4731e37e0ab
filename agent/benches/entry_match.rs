//! Attesting a caller among 100,000 registration entries (each a distinct SPIFFE ID with a
//! `unix:uid:N` selector, as the scale test imports): through the selector index, and the
//! full scan it replaced, for comparison. Target: ≤ 50 µs through the index.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use esm_agent::entry::{matching, Entry, Selector};
use esm_agent::entry_index::EntrySet;
use esm_identity::SpiffeId;

const N: u32 = 100_000;

fn entries() -> Vec<Entry> {
    (0..N)
        .map(|n| Entry {
            id: format!("{n:032x}"),
            spiffe_id: SpiffeId::parse(&format!("spiffe://example.org/workload/{n}")).unwrap(),
            selectors: [Selector::parse(&format!("unix:uid:{n}")).unwrap()].into(),
            ttl_secs: None,
            dns_names: vec![],
            created_at: "2026-01-01T00:00:00Z".into(),
        })
        .collect()
}

/// What the agent attests for a Unix-socket caller: uid, gid and executable path.
fn caller(uid: u32) -> BTreeSet<Selector> {
    [
        format!("unix:uid:{uid}"),
        format!("unix:gid:{uid}"),
        "unix:path:/usr/bin/workload".to_owned(),
    ]
    .iter()
    .map(|s| Selector::parse(s).unwrap())
    .collect()
}

fn bench(c: &mut Criterion) {
    let all = entries();
    let set = EntrySet::new(all.clone());
    let who = caller(N / 2 + 17);
    assert_eq!(set.matching(&who).len(), 1);
    c.bench_function("match_100k_index", |b| {
        b.iter(|| black_box(set.matching(black_box(&who))).len())
    });
    c.bench_function("match_100k_scan", |b| {
        b.iter(|| black_box(matching(black_box(&all), black_box(&who))).len())
    });
    c.bench_function("index_build_100k", |b| {
        b.iter_batched(
            || all.clone(),
            |v| EntrySet::new(v).len(),
            criterion::BatchSize::LargeInput,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
