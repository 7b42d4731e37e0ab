//! Durable appends per second (acknowledged after commit, hash chain and checkpoints on) with
//! 1, 4 and 64 producers, on SQLite and on the machine's PostgreSQL, next to a baseline
//! measured in the same run: the same rows, already hashed, inserted in one transaction per
//! 8,192 with no queue, no acknowledgements and no Merkle tree — the store's own floor.
//! Then `verify` events per second over the log the benchmark wrote.
//!
//! `cargo bench -p esm-audit --bench append`; criterion prints elements/s = events/s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{event, Backend};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use esm_audit::checkpoint::SigningKey;
use esm_audit::event::prepare;
use esm_audit::hash_chain::{link, GENESIS};
use esm_audit::redact::Redactor;
use esm_audit::writer::{start, WriterOptions};

/// Events per measured iteration.
const N: u64 = 20_000;

type MakeBackend = fn() -> Backend;

const BACKENDS: [(&str, MakeBackend); 2] =
    [("sqlite", Backend::sqlite), ("postgres", Backend::postgres)];

/// The writer path: `producers` tasks each queue their share and wait for every receipt.
async fn through_writer(b: &Backend, producers: u64) -> Duration {
    let db = b.open().await;
    let opts = WriterOptions::default();
    let (sink, handle) = start(
        db,
        SigningKey::ephemeral().unwrap(),
        Redactor::from_secret(&[7; 32]),
        opts,
    )
    .await
    .unwrap();
    let t = Instant::now();
    let per = N / producers;
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut receipts = Vec::with_capacity(per as usize);
                for i in 0..per {
                    receipts.push(sink.append(event(p * per + i)).await.unwrap());
                }
                for r in receipts {
                    r.committed().await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = t.elapsed();
    drop(sink);
    handle.shutdown().await.unwrap();
    elapsed
}

/// The baseline: the same rows hashed up front, inserted straight into the store.
async fn baseline(b: &Backend) -> Duration {
    let db = b.open().await;
    let mut prev = (0, GENESIS);
    let records: Vec<_> = (0..N)
        .map(|i| {
            let r = link(
                prepare(event(i), &|v| v.to_owned()).unwrap(),
                prev.0,
                prev.1,
            );
            prev = (r.seq, r.hash);
            r
        })
        .collect();
    let mut chunks = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(8192));
        chunks.push(std::mem::replace(&mut rest, tail));
    }
    let t = Instant::now();
    for chunk in chunks {
        let mut tx = db.begin_write().await.unwrap();
        tx.insert(&chunk).await.unwrap();
        tx.commit().await.unwrap();
    }
    t.elapsed()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for (name, make) in BACKENDS {
        let mut g = c.benchmark_group(format!("audit_append_{name}"));
        g.throughput(Throughput::Elements(N));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(10));
        g.bench_function("baseline_raw_insert", |bch| {
            bch.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += baseline(&make()).await;
                    }
                    total
                })
            })
        });
        for producers in [1, 4, 64] {
            g.bench_with_input(
                BenchmarkId::new("writer_producers", producers),
                &producers,
                |bch, &p| {
                    bch.iter_custom(|iters| {
                        rt.block_on(async {
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                total += through_writer(&make(), p).await;
                            }
                            total
                        })
                    })
                },
            );
        }
        g.finish();
    }

    // Verification over one log of 200,000 events with the default checkpoint cadence.
    let mut g = c.benchmark_group("audit_verify");
    for (name, make) in BACKENDS {
        let b = make();
        let key = SigningKey::ephemeral().unwrap();
        let public = key.public();
        let size = 200_000;
        rt.block_on(async {
            let (sink, handle) = start(
                b.open().await,
                key,
                Redactor::from_secret(&[7; 32]),
                WriterOptions::default(),
            )
            .await
            .unwrap();
            let mut receipts = Vec::new();
            for i in 0..size {
                receipts.push(sink.append(event(i)).await.unwrap());
            }
            for r in receipts {
                r.committed().await.unwrap();
            }
            drop(sink);
            handle.shutdown().await.unwrap();
        });
        let db = rt.block_on(b.open());
        g.throughput(Throughput::Elements(size));
        g.sample_size(10);
        g.bench_function(name, |bch| {
            bch.iter(|| {
                let r = rt
                    .block_on(esm_audit::verify::verify(&db, &public, None))
                    .unwrap();
                assert_eq!(r.events, size);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
