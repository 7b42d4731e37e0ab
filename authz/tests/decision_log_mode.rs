//! `decision_log_mode = "sync"`: a Check is answered only once its `authz.decision` record is
//! committed, concurrent Checks share commits, and a record that cannot be kept denies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use esm_audit::checkpoint::SigningKey;
use esm_audit::redact::Redactor;
use esm_audit::store::{Db, Filter};
use esm_audit::writer::{start, AuditSink, WriterHandle, WriterOptions};
use esm_authz::check::CheckOptions;
use esm_authz::policy_set::{PolicySet, SourceFile};
use esm_authz::service::{AuthzService, DecisionLogMode, Metrics, ServedSet};
use tokio::sync::watch;

const POLICY: &str = r#"package envoy.authz
import rego.v1
default allow := false
allow if input.attributes.request.http.method == "GET"
"#;

fn served() -> ServedSet {
    let set = PolicySet::compile(
        vec![SourceFile {
            path: "p.rego".into(),
            text: POLICY.into(),
        }],
        "data.envoy.authz.allow",
    )
    .unwrap();
    let (tx, rx) = watch::channel(Arc::new(set));
    std::mem::forget(tx);
    ServedSet {
        name: "default".into(),
        dry_run: false,
        policies: rx,
    }
}

fn request(id: u64) -> CheckRequest {
    let mut http = HttpRequest {
        method: "GET".into(),
        path: format!("/items/{id}"),
        host: "svc".into(),
        ..Default::default()
    };
    http.headers
        .insert("x-request-id".into(), format!("req-{id}"));
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

fn allowed(r: &envoy_types::pb::envoy::service::auth::v3::CheckResponse) -> bool {
    r.status.as_ref().is_some_and(|s| s.code == 0)
}

async fn store(linger: Duration) -> (tempfile::TempDir, Db, AuditSink, WriterHandle) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let db = Db::open(&url, None).await.unwrap();
    let key = SigningKey::load_or_create(dir.path()).unwrap();
    let opts = WriterOptions {
        linger,
        ..WriterOptions::default()
    };
    let (sink, handle) = start(db.clone(), key, Redactor::from_secret(&[3; 32]), opts)
        .await
        .unwrap();
    (dir, db, sink, handle)
}

fn service(sink: AuditSink, mode: DecisionLogMode, metrics: &Arc<Metrics>) -> AuthzService {
    AuthzService::new(
        vec![served()],
        CheckOptions::default(),
        Some(sink),
        metrics.clone(),
    )
    .with_decision_log_mode(mode)
}

async fn recorded(db: &Db) -> Vec<String> {
    let f = Filter {
        kind: Some(esm_audit::kind::AUTHZ_DECISION.into()),
        ..Default::default()
    };
    db.page(0, &f)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.correlation_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_answers_only_after_the_record_is_committed() {
    // A long linger: in async mode the records would still be queued when the answers come.
    let (_dir, db, sink, handle) = store(Duration::from_millis(500)).await;
    let metrics = Arc::new(Metrics::default());
    let svc = service(sink.clone(), DecisionLogMode::Sync, &metrics);
    let mut tasks = Vec::new();
    for id in 0..64 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            allowed(&svc.decide_durably(&request(id)).await)
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    // Every answered decision is already in the store.
    let mut ids = recorded(&db).await;
    ids.sort();
    let mut want: Vec<String> = (0..64).map(|i| format!("req-{i}")).collect();
    want.sort();
    assert_eq!(ids, want);
    // They shared commits rather than paying one each, and nobody lingered.
    let batches = sink.metrics().batches.load(Ordering::Relaxed);
    assert!(batches < 64, "{batches} commits for 64 decisions");
    drop((svc, sink));
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_mode_answers_before_the_commit() {
    let (_dir, db, sink, handle) = store(Duration::from_millis(500)).await;
    let metrics = Arc::new(Metrics::default());
    let svc = service(sink.clone(), DecisionLogMode::Async, &metrics);
    assert!(allowed(&svc.decide_durably(&request(1)).await));
    assert!(
        recorded(&db).await.is_empty(),
        "still lingering in the queue"
    );
    drop((svc, sink));
    handle.shutdown().await.unwrap();
    assert_eq!(recorded(&db).await, ["req-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_denies_when_the_record_cannot_be_kept() {
    let (_dir, _db, sink, handle) = store(Duration::from_millis(5)).await;
    let metrics = Arc::new(Metrics::default());
    let svc = service(sink.clone(), DecisionLogMode::Sync, &metrics);
    assert!(allowed(&svc.decide_durably(&request(1)).await));
    // The writer is gone: nothing more can be recorded.
    handle.shutdown().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), svc.decide_durably(&request(2)))
        .await
        .unwrap();
    assert!(!allowed(&r));
    let status = match r.http_response {
        Some(
            envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse::DeniedResponse(
                d,
            ),
        ) => d.status.map(|s| s.code),
        _ => None,
    };
    assert_eq!(status, Some(503));
    assert_eq!(metrics.audit_refused.load(Ordering::Relaxed), 1);
    // Counted once, as esm failing closed: not also as the allow the policy gave.
    assert_eq!(metrics.allowed.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.denied.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_queue_fails_closed_and_is_not_counted_as_a_policy_deny() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let url = format!("sqlite://{}", path.display());
    let db = Db::open(&url, None).await.unwrap();
    // The store refuses every record from now on: the writer retries its batch while the
    // small queue fills behind it.
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER test_refuses_all BEFORE INSERT ON events \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(&raw)
    .await
    .unwrap();
    raw.close().await;
    let key = SigningKey::load_or_create(dir.path()).unwrap();
    let opts = WriterOptions {
        queue_capacity: 2,
        max_batch: 1,
        linger: Duration::ZERO,
        ..WriterOptions::default()
    };
    let (sink, _handle) = start(db, key, Redactor::from_secret(&[3; 32]), opts)
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::default());
    let svc = service(sink, DecisionLogMode::Async, &metrics);
    // What an operator sees: the decisions are made on this thread, so its own subscriber
    // catches their log lines.
    let logs = Logs::default();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .json()
            .with_writer(logs.clone())
            .finish(),
    );
    let mut refused = 0;
    for id in 0..200 {
        if !allowed(&svc.decide_durably(&request(id)).await) {
            refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused > 0, "the queue never filled");
    let failed_closed: Vec<serde_json::Value> = logs
        .lines()
        .into_iter()
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("failed closed"))
        })
        .collect();
    assert_eq!(
        failed_closed.len() as u64,
        refused,
        "one log line per refusal"
    );
    for l in &failed_closed {
        assert_eq!(l["level"], "WARN", "{l}");
        assert_eq!(l["fields"]["decision"], "deny", "{l}");
        assert_eq!(l["fields"]["failure"], "audit", "{l}");
    }
    // Every refusal is esm failing closed; the policy allows GET and denied nothing.
    assert_eq!(metrics.audit_refused.load(Ordering::Relaxed), refused);
    assert_eq!(metrics.denied.load(Ordering::Relaxed), 0);
    assert_eq!(metrics.failed_closed.load(Ordering::Relaxed), 0);
    assert_eq!(
        metrics.allowed.load(Ordering::Relaxed) + refused,
        200,
        "one result per decision"
    );
}

/// Log lines written by a test's own subscriber, one JSON object each.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
