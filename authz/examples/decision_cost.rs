//! Runs one decision scenario N times, for instruction counts that a noisy machine does not
//! move: `valgrind --tool=callgrind --separate-threads=yes target/release/examples/decision_cost
//! miss 10000`, once with N and once with a larger N; the difference of the main thread's
//! counts over the difference of N is the cost of one decision.
//!
//! Scenarios: `build` (the default policy's input only), `hit` / `miss` (the decision memo
//! answers / a new path every time), `fresh` (no memo: evaluated every time), `service-hit` / `service-miss` (the same through
//! [`AuthzService::decide`] with every decision audited to SQLite, as `esm serve` does); each
//! with `-interpreter` appended runs on regorus' interpreter instead of its bytecode VM.
#![allow(clippy::print_stderr, clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/support/request.rs"]
mod request;

use std::path::Path;
use std::sync::Arc;

use esm_authz::check::{check, CheckOptions};
use esm_authz::input::{build_projected, InputOptions};
use esm_authz::policy_set::PolicySet;
use esm_authz::service::{AuthzService, Metrics, ServedSet};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(scenario), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!(
            "usage: decision_cost build|hit|miss|fresh|service-hit|service-miss[-interpreter] N"
        );
        std::process::exit(2);
    };
    // `miss-interpreter` and the like: the same on regorus' interpreter, not the bytecode VM.
    let (scenario, interpreted) = match scenario.strip_suffix("-interpreter") {
        Some(s) => (s.to_owned(), true),
        None => (scenario.clone(), false),
    };
    // ESM_POLICY=examples/rbac and the like: another shipped set (default: the default).
    let policy = std::env::var("ESM_POLICY").unwrap_or_else(|_| "default".into());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies")
        .join(policy);
    let mut set = PolicySet::load(&dir, "data.envoy.authz.allow").unwrap();
    if interpreted {
        set = set.interpreted();
    }
    if scenario == "fresh" {
        set = set.with_memo_capacity(0);
    }
    let set = Arc::new(set);
    let opts = CheckOptions::default();
    let mut req = request::granted();
    let mut allowed = 0u64;
    match scenario.as_str() {
        "build" => {
            for _ in 0..n {
                let input = build_projected(&req, &InputOptions::default(), set.projection());
                allowed += u64::from(input.is_ok());
            }
        }
        "fresh" => {
            for _ in 0..n {
                allowed += u64::from(check(&set, &req, &opts).decision.allowed);
            }
        }
        "hit" | "miss" => {
            for i in 0..n {
                if scenario == "miss" {
                    request::set_path(&mut req, i);
                }
                allowed += u64::from(check(&set, &req, &opts).decision.allowed);
            }
        }
        "service-hit" | "service-miss" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let tmp = tempfile::tempdir().unwrap();
            let (sink, handle) = rt.block_on(audit(tmp.path()));
            let (tx, rx) = tokio::sync::watch::channel(set);
            let served = ServedSet {
                name: "default".into(),
                dry_run: false,
                policies: rx,
            };
            let svc =
                AuthzService::new(vec![served], opts, Some(sink), Arc::new(Metrics::default()));
            for i in 0..n {
                if scenario == "service-miss" {
                    request::set_path(&mut req, i);
                }
                let r = svc.decide(&req);
                allowed += u64::from(r.status.is_some_and(|s| s.code == 0));
                if i % 4096 == 4095 {
                    // Lets the writer drain the queue, as a server's idle moments do.
                    rt.block_on(async {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await
                    });
                }
            }
            drop((svc, tx));
            rt.block_on(handle.shutdown()).unwrap();
        }
        other => {
            eprintln!("unknown scenario {other:?}");
            std::process::exit(2);
        }
    }
    eprintln!("{scenario}: {allowed} of {n} allowed");
}

async fn audit(
    dir: &Path,
) -> (
    esm_audit::writer::AuditSink,
    esm_audit::writer::WriterHandle,
) {
    let url = format!("sqlite://{}", dir.join("audit.db").display());
    let db = esm_audit::store::Db::open(&url, None).await.unwrap();
    let key = esm_audit::checkpoint::SigningKey::load_or_create(dir).unwrap();
    esm_audit::writer::start(
        db,
        key,
        esm_audit::redact::Redactor::from_secret(&[7; 32]),
        esm_audit::writer::WriterOptions::default(),
    )
    .await
    .unwrap()
}
