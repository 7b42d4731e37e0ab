//! A decision's audit record does not depend on how the decision was reached: the same
//! request answered by a fresh evaluation (a memo miss), by the decision memo (a hit), and by
//! a set with no memo at all is recorded identically, apart from its place in the chain and
//! its time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use esm_audit::checkpoint::SigningKey;
use esm_audit::event::Record;
use esm_audit::redact::Redactor;
use esm_audit::store::Db;
use esm_audit::writer::{start, AuditSink, WriterOptions};
use esm_authz::check::CheckOptions;
use esm_authz::policy_set::{PolicySet, SourceFile};
use esm_authz::service::{AuthzService, Metrics, ServedSet};
use tokio::sync::watch;

const POLICY: &str = r#"package envoy.authz
import rego.v1
default allow := {"allowed": false, "http_status": 401}
allow := {"allowed": true} if input.attributes.request.http.method == "GET"
"#;

fn service(sink: &AuditSink, memo: usize, metrics: &Arc<Metrics>) -> AuthzService {
    let set = PolicySet::compile(
        vec![SourceFile {
            path: "p.rego".into(),
            text: POLICY.into(),
        }],
        "data.envoy.authz.allow",
    )
    .unwrap()
    .with_memo_capacity(memo);
    let (tx, rx) = watch::channel(Arc::new(set));
    std::mem::forget(tx);
    let served = ServedSet {
        name: "default".into(),
        dry_run: false,
        policies: rx,
    };
    AuthzService::new(
        vec![served],
        CheckOptions::default(),
        Some(sink.clone()),
        metrics.clone(),
    )
}

fn request(method: &str) -> CheckRequest {
    let mut http = HttpRequest {
        method: method.into(),
        path: "/items/7?full=1".into(),
        host: "api.local".into(),
        ..Default::default()
    };
    http.headers.insert("x-request-id".into(), "req-7".into());
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Default::default()),
            request: Some(Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// A record without what differs between two records of one decision: its place in the
/// chain, its hashes and its time.
fn content(r: &Record) -> [&str; 9] {
    [
        &r.kind,
        &r.actor,
        &r.subject,
        &r.action,
        &r.outcome,
        &r.reason,
        &r.correlation_id,
        &r.node,
        &r.details,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memo_hit_and_a_miss_write_the_same_record() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let db = Db::open(&url, None).await.unwrap();
    let key = SigningKey::load_or_create(dir.path()).unwrap();
    let opts = WriterOptions {
        node: "node-7".into(),
        ..WriterOptions::default()
    };
    let (sink, handle) = start(db.clone(), key, Redactor::from_secret(&[3; 32]), opts)
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::default());
    let memo = service(&sink, 16, &metrics);
    let fresh = service(&sink, 0, &metrics);
    for method in ["GET", "POST"] {
        let req = request(method);
        let before = metrics.memoized.load(Ordering::Relaxed);
        memo.decide(&req); // a miss: evaluated and remembered
        assert_eq!(metrics.memoized.load(Ordering::Relaxed), before);
        memo.decide(&req); // a hit
        assert_eq!(metrics.memoized.load(Ordering::Relaxed), before + 1);
        fresh.decide(&req); // no memo at all
    }
    drop((memo, fresh, sink));
    handle.shutdown().await.unwrap();
    let records = db.page(0, &Default::default()).await.unwrap();
    let decisions: Vec<&Record> = records
        .iter()
        .filter(|r| r.kind == esm_audit::kind::AUTHZ_DECISION)
        .collect();
    assert_eq!(decisions.len(), 6);
    for three in decisions.chunks(3) {
        assert_eq!(content(three[0]), content(three[1]), "miss and hit");
        assert_eq!(content(three[0]), content(three[2]), "miss and no memo");
    }
    // The records say what was decided, not how.
    assert_eq!(decisions[0].outcome, "allow");
    assert_eq!(decisions[3].outcome, "deny");
    assert!(decisions[3].details.contains(r#""status":401"#));
    assert!(decisions[0].details.contains(r#""path":"/items/7""#));
    assert_eq!(decisions[0].node, "node-7");
}
