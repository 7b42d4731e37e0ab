//! In-process decision time for the default zero-trust policy: CheckRequest → input →
//! evaluation → Envoy response, answered by the decision memo, missing it, and with no memo
//! at all, on regorus' bytecode VM and on its interpreter, next to building the input alone
//! in the same run.
//!
//! `cargo bench -p esm-authz --bench decision`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/request.rs"]
mod request;

use std::path::Path;

/// The allocator the `esm` binary uses, so the figures are the binary's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, Criterion};
use esm_authz::check::{check, CheckOptions};
use esm_authz::engine::Kind;
use esm_authz::input::{build, build_projected, InputOptions};
use esm_authz::policy_set::PolicySet;

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default");
    let load = || PolicySet::load(&dir, "data.envoy.authz.allow").unwrap();
    let set = load();
    assert_eq!(set.engine_kind(), Kind::Bytecode);
    let interpreted = load().interpreted();
    let req = request::granted();
    let opts = CheckOptions::default();
    assert!(check(&set, &req, &opts).decision.allowed);
    let mut g = c.benchmark_group("authz_decision");
    g.bench_function("input_build_only", |b| {
        b.iter(|| build(&req, &InputOptions::default()).unwrap())
    });
    // Only what the default policy reads (identities, method, path).
    g.bench_function("input_build_projected", |b| {
        b.iter(|| build_projected(&req, &InputOptions::default(), set.projection()).unwrap())
    });
    // The same workloads and route every time: the memo answers, no input is built.
    g.bench_function("default_policy_check", |b| {
        b.iter(|| check(&set, &req, &opts))
    });
    // A new path every time: the memo misses, builds the input, evaluates and stores (the
    // first-seen request), on the VM and on the interpreter.
    for (name, set) in [
        ("default_policy_check_memo_miss", &set),
        ("default_policy_check_memo_miss_interpreter", &interpreted),
    ] {
        let mut unique = req.clone();
        let mut n = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                request::set_path(&mut unique, n);
                check(set, &unique, &opts)
            })
        });
    }
    // No memo at all: an evaluation on every request.
    let fresh = load().with_memo_capacity(0);
    g.bench_function("default_policy_check_no_memo", |b| {
        b.iter(|| check(&fresh, &req, &opts))
    });
    g.finish();
    recording(c, &set);
}

/// What recording a decision's latency costs on the service's path: the clock reads and
/// counter it already had (`esm_authz_decision_seconds_total`), then with the latency
/// histogram's observation of the same reading added, on a memo hit and a memo miss.
fn recording(c: &mut Criterion, set: &PolicySet) {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::time::Instant;
    let req = request::granted();
    let opts = CheckOptions::default();
    let eval_nanos = AtomicU64::new(0);
    let histogram = esm_histogram::Histogram::new(esm_histogram::DECISION);
    let timed = |req: &_, record: bool| {
        let started = Instant::now();
        let c = check(set, req, &opts);
        let nanos = started.elapsed().as_nanos() as u64;
        eval_nanos.fetch_add(nanos, Relaxed);
        if record {
            histogram.observe_nanos(nanos);
        }
        c
    };
    let mut g = c.benchmark_group("authz_decision_recording");
    for (name, record) in [("memo_hit_before", false), ("memo_hit_recorded", true)] {
        g.bench_function(name, |b| b.iter(|| timed(&req, record)));
    }
    // One path counter for both, so that the second never meets the first's memo entries.
    let mut unique = req.clone();
    let mut n = 0u64;
    for (name, record) in [("memo_miss_before", false), ("memo_miss_recorded", true)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                request::set_path(&mut unique, n);
                timed(&unique, record)
            })
        });
    }
    g.bench_function("histogram_observe_only", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n = n.wrapping_add(977);
            histogram.observe_nanos(n % 2_000_000)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
