#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::input::tests_support::http_request;
use crate::policy_set::SourceFile;

fn set(rego: &str) -> PolicySet {
    PolicySet::compile(
        vec![SourceFile {
            path: "p.rego".into(),
            text: rego.into(),
        }],
        "data.envoy.authz.allow",
    )
    .unwrap()
}

const BY_METHOD: &str = r#"package envoy.authz
default allow := false
allow if input.attributes.request.http.method == "GET"
"#;

#[test]
fn allows_and_denies_by_policy() {
    let s = set(BY_METHOD);
    let get = check(
        &s,
        &http_request("GET", "/", &[], ""),
        &CheckOptions::default(),
    );
    assert!(get.decision.allowed && get.failure.is_none());
    let post = check(
        &s,
        &http_request("POST", "/", &[], ""),
        &CheckOptions::default(),
    );
    assert!(!post.decision.allowed);
    assert_eq!(post.decision.http_status, Some(403));
}

#[test]
fn undefined_result_denies() {
    let s = set("package envoy.authz\nallow if input.nope == 1\n");
    let c = check(
        &s,
        &http_request("GET", "/", &[], ""),
        &CheckOptions::default(),
    );
    assert!(!c.decision.allowed);
    assert_eq!(c.failure.unwrap().0, Failure::Undefined);
}

#[test]
fn evaluation_error_denies() {
    let s = set("package envoy.authz\nallow if { x := 1 / 0; x > 0 }\ndefault allow := false\n");
    let c = check(
        &s,
        &http_request("GET", "/", &[], ""),
        &CheckOptions::default(),
    );
    assert!(!c.decision.allowed);
}

#[test]
fn malformed_body_denies_with_input_failure() {
    let s = set(BY_METHOD);
    let req = http_request("GET", "/", &[("content-type", "application/json")], "{nope");
    let c = check(&s, &req, &CheckOptions::default());
    assert!(!c.decision.allowed);
    assert_eq!(c.failure.unwrap().0, Failure::Input);
}

#[test]
fn dry_run_allows_but_reports_the_policy_decision() {
    let s = set(BY_METHOD);
    let opts = CheckOptions {
        dry_run: true,
        ..CheckOptions::default()
    };
    let c = check(&s, &http_request("POST", "/", &[], ""), &opts);
    assert!(c.decision.allowed);
    assert!(!c.policy_allowed);
}

#[test]
fn configured_deny_status_applies_when_policy_sets_none() {
    let s = set(BY_METHOD);
    let opts = CheckOptions {
        deny_status: 401,
        ..CheckOptions::default()
    };
    let c = check(&s, &http_request("POST", "/", &[], ""), &opts);
    assert_eq!(c.decision.http_status, Some(401));
}
