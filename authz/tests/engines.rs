//! A policy set regorus' bytecode VM does not run exactly as the interpreter (here: `else`)
//! is evaluated by the interpreter, says why, and its evaluations are counted apart from the
//! VM's, for `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use esm_authz::check::CheckOptions;
use esm_authz::engine::Kind;
use esm_authz::policy_set::{PolicySet, SourceFile};
use esm_authz::service::{AuthzService, Metrics, ServedSet, SET_KEY};
use tokio::sync::watch;

const PLAIN: &str = r#"package envoy.authz
import rego.v1
default allow := false
allow if input.attributes.request.http.method == "GET"
"#;

const WITH_ELSE: &str = r#"package envoy.authz
import rego.v1
method := m if { m := input.attributes.request.http.method } else := "none"
allow if method == "GET"
"#;

fn set(text: &str) -> PolicySet {
    let files = vec![SourceFile {
        path: "p.rego".into(),
        text: text.into(),
    }];
    PolicySet::compile(files, "data.envoy.authz.allow")
        .unwrap()
        .with_memo_capacity(0)
}

fn served(name: &str, set: PolicySet) -> ServedSet {
    let (tx, rx) = watch::channel(Arc::new(set));
    std::mem::forget(tx);
    ServedSet {
        name: name.into(),
        dry_run: false,
        policies: rx,
    }
}

fn request(set: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: [(SET_KEY.to_string(), set.to_string())].into(),
            ..Default::default()
        }),
    }
}

#[test]
fn a_set_the_vm_does_not_run_is_interpreted_and_counted_apart() {
    let plain = set(PLAIN);
    assert_eq!(plain.engine_kind(), Kind::Bytecode);
    assert_eq!(plain.interpreted_because(), None);
    let with_else = set(WITH_ELSE);
    assert_eq!(with_else.engine_kind(), Kind::Interpreter);
    assert!(with_else
        .interpreted_because()
        .is_some_and(|why| why.contains("else")));
    let metrics = Arc::new(Metrics::default());
    let svc = AuthzService::new(
        vec![served("plain", plain), served("else", with_else)],
        CheckOptions::default(),
        None,
        metrics.clone(),
    );
    for name in ["plain", "plain", "else"] {
        let r = svc.decide(&request(name));
        assert_eq!(r.status.map(|s| s.code), Some(0), "{name}");
    }
    assert_eq!(metrics.evaluated_rvm.load(Ordering::Relaxed), 2);
    assert_eq!(metrics.evaluated_interpreter.load(Ordering::Relaxed), 1);
}

#[test]
fn a_set_calling_esm_token_builtins_stays_on_the_interpreter_with_a_one_line_reason() {
    let s = set(r#"package envoy.authz
import rego.v1
default allow := false
allow if {
    [valid, _, _] := io.jwt.decode_verify(input.attributes.request.http.headers.authorization, {})
    valid
}
"#);
    assert_eq!(s.engine_kind(), Kind::Interpreter);
    let why = s.interpreted_because().unwrap();
    assert!(why.contains("io.jwt.decode_verify"), "{why}");
    assert!(why.starts_with("p.rego:") && !why.contains('\n'), "{why}");
}
