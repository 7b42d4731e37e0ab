//! The report benchmark's helper (driven by `bench/report.py`):
//!
//! - `generate DIR N DAYS`: writes N events spread over DAYS days ending now into the store
//!   of data dir DIR (made by `esm init`), through esm-audit's writer with DIR's audit keys:
//!   decisions between a few dozen services (about 8 % denied), SDS issuances and renewals,
//!   registration entries, policy reloads and CA rotations.
//! - `read DIR`: the baseline: one sequential read of every event, page by page, by one
//!   reader, with no checks and no hashing; prints the count and the seconds it took.
//!
//! Both take a PostgreSQL store's URL and schema as last arguments to use it instead of
//! DIR's SQLite file.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::Path;
use std::time::Instant;

use esm_audit::checkpoint::SigningKey;
use esm_audit::redact::Redactor;
use esm_audit::store::{Db, ScanOptions};
use esm_audit::writer::{start, WriterOptions};
use esm_audit::{kind, Event, FlatObject, Outcome};
use time::{Duration, OffsetDateTime};

const SERVICES: u64 = 40;

/// The store named after DIR on the command line: `URL [SCHEMA]` (a PostgreSQL database),
/// else DIR's SQLite file.
struct Store<'a>(Option<&'a String>, Option<&'a String>);

impl Store<'_> {
    fn url(&self, dir: &Path) -> String {
        self.0
            .cloned()
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("audit.db").display()))
    }

    fn schema(&self) -> Option<&str> {
        self.1.map(String::as_str)
    }
}

fn id(n: u64) -> String {
    format!("spiffe://example.org/ns/prod/sa/svc-{n}")
}

fn event_at(i: u64, t: OffsetDateTime) -> Event {
    let r = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7;
    let (caller, service) = (r % SERVICES, (r / SERVICES) % SERVICES);
    if i % 5_000 == 1 {
        let mut e = Event::new(kind::ENTRY_CREATED, Outcome::Success);
        e.actor = "admin-socket:cli:uid:0".into();
        e.subject = id(i / 5_000 % SERVICES);
        e.action = "create".into();
        e.details = serde_json::json!({"entry.id": format!("e{i}"), "selectors": ["unix:uid:1000"], "ttl_secs": 3600}).into();
        e.time = t;
        return e;
    }
    if i % 400 == 2 {
        let mut e = Event::new(kind::SVID_ISSUED, Outcome::Success);
        e.actor = format!("uid:1000 pid:{}", i % 97);
        e.subject = id(caller);
        e.action = "issue".into();
        let fmt = &time::format_description::well_known::Rfc3339;
        e.details = serde_json::json!({
            "serial": format!("{i:x}"), "via": "sds", "signed_by": "int-1", "key_source": "generated",
            "not_before": (t - Duration::seconds(30)).format(fmt).unwrap(),
            "not_after": (t + Duration::hours(1)).format(fmt).unwrap(),
            "cert_sha256": "00",
        })
        .into();
        e.time = t;
        return e;
    }
    if i % 1_000_000 == 3 {
        let mut e = Event::new(kind::POLICY_CHANGED, Outcome::Success);
        e.actor = "esm:policy-reload".into();
        e.subject = "/etc/esm/policies".into();
        e.action = "reload".into();
        e.details = serde_json::json!({"policy.hash": format!("{:064x}", i / 1_000_000 + 1), "policy.set": "default", "previous.hash": ""}).into();
        e.time = t;
        return e;
    }
    let deny = r.is_multiple_of(13);
    let mut e = Event::new(
        kind::AUTHZ_DECISION,
        if deny { Outcome::Deny } else { Outcome::Allow },
    );
    e.actor = id(caller);
    e.subject = id(service);
    e.action = "GET api.internal".into();
    e.correlation_id = format!("{i:016x}");
    e.details = FlatObject::new()
        .bool("dry_run", false)
        .str("path", "/items/7")
        .str("policy.hash", &format!("{:064x}", i / 1_000_000 + 1))
        .str("policy.rule", "data.envoy.authz.allow")
        .str("policy.set", "default")
        .bool("policy_allowed", !deny)
        .opt_u64("status", deny.then_some(403))
        .into();
    e.time = t;
    e
}

async fn generate(dir: &Path, n: u64, days: i64, store: Store<'_>) {
    let db = Db::open(&store.url(dir), store.schema()).await.unwrap();
    let audit = dir.join("audit");
    let key = SigningKey::load_or_create(&audit).unwrap();
    let redactor = Redactor::load_or_create(&audit).unwrap();
    let (sink, handle) = start(
        db.clone(),
        key,
        redactor,
        WriterOptions {
            nice: 0,
            ..WriterOptions::default()
        },
    )
    .await
    .unwrap();
    let end = OffsetDateTime::now_utc() - Duration::minutes(5);
    let span_ns = days as i128 * 86_400 * 1_000_000_000;
    let started = Instant::now();
    let mut last = None;
    for i in 0..n {
        let t =
            end - Duration::nanoseconds((span_ns - span_ns * i128::from(i) / i128::from(n)) as i64);
        last = Some(sink.append(event_at(i, t)).await.unwrap());
        if i % 1_000_000 == 0 && i > 0 {
            println!("{i} events, {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    if let Some(r) = last {
        r.committed().await.unwrap();
    }
    drop(sink);
    handle.shutdown().await.unwrap();
    db.close().await;
    println!(
        "generated {n} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// One sequential read of the whole log, no checks: the baseline. `select`: PostgreSQL
/// ranges read with SELECT instead of COPY, to compare the two.
async fn read(dir: &Path, store: Store<'_>, select: bool) {
    let started = Instant::now();
    let db = Db::open_to_read(&store.url(dir), store.schema())
        .await
        .unwrap();
    let end = db.last_seq().await.unwrap().unwrap_or(0);
    let one_reader = ScanOptions {
        lanes: 1,
        hashes: false,
        pg_copy: !select,
        ..ScanOptions::default()
    };
    let mut scan = db.scan(0, end, one_reader);
    let mut count = 0u64;
    while let Some(page) = scan.next().await {
        let page = page.unwrap();
        count += page.len() as u64;
        scan.recycle(page);
    }
    println!(
        "read {count} events in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    db.close().await;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match args.get(1).map(String::as_str) {
        Some("generate") => rt.block_on(generate(
            Path::new(&args[2]),
            args[3].parse().unwrap(),
            args[4].parse().unwrap(),
            Store(args.get(5), args.get(6)),
        )),
        Some(mode @ ("read" | "read-select")) => rt.block_on(read(
            Path::new(&args[2]),
            Store(args.get(3), args.get(4)),
            mode == "read-select",
        )),
        _ => eprintln!(
            "usage: report_bench generate DIR N DAYS [URL [SCHEMA]] | read|read-select DIR [URL [SCHEMA]]"
        ),
    }
}
