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

#[test]
fn decision_event_details_are_the_documented_object() {
    // The flat writer must store exactly what reports and `esm audit export` have read
    // since the first release: the same keys, `status` only on denials, null when unset.
    let s = std::sync::Arc::new(set(BY_METHOD));
    let opts = CheckOptions::default();
    for (method, dry_run) in [("GET", false), ("POST", false), ("POST", true)] {
        let req = http_request(method, "/items/7?x=1", &[], "");
        let opts = CheckOptions {
            dry_run,
            ..opts.clone()
        };
        let c = check(&s, &req, &opts);
        let e = crate::service::decision_event(&req, &c, "default", Some(s.clone()), &opts);
        let want = serde_json::json!({
            "policy.set": "default",
            "policy.hash": s.hash,
            "policy.rule": s.rule,
            "path": "/items/7",
            "status": (!c.decision.allowed).then_some(c.decision.http_status),
            "dry_run": dry_run,
            "policy_allowed": c.policy_allowed,
        });
        assert_eq!(e.details.to_value(), want, "{method} dry_run={dry_run}");
        stored_canonically(e);
    }
    let refused = crate::check::refuse(Failure::Input, "bad".into(), &opts);
    let req = http_request("GET", "/", &[], "");
    let e = crate::service::decision_event(&req, &refused, "missing", None, &opts);
    assert_eq!(
        e.details.to_value(),
        serde_json::json!({"policy.set": "missing", "policy.hash": null, "policy.rule": null,
            "path": "/", "status": 403, "dry_run": false, "policy_allowed": false})
    );
}

/// The HTTP part of a request made by `http_request`.
fn http_of(
    req: &mut CheckRequest,
) -> &mut envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest {
    let http = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut());
    http.expect("http_request makes an HTTP request")
}

/// A request whose peer principal is empty (a proxy in front terminated mTLS), carrying `xfcc`.
fn behind_a_proxy(xfcc: &str) -> CheckRequest {
    let mut req = http_request("GET", "/", &[("x-forwarded-client-cert", xfcc)], "");
    if let Some(src) = req.attributes.as_mut().and_then(|a| a.source.as_mut()) {
        src.principal.clear();
    }
    req
}

fn with_xfcc() -> CheckOptions {
    CheckOptions {
        input: InputOptions {
            xfcc: true,
            ..Default::default()
        },
        ..CheckOptions::default()
    }
}

/// The record of `s`'s decision on `req`: its actor and `forwarded_by`.
fn actor_of(
    s: &std::sync::Arc<PolicySet>,
    req: &CheckRequest,
    opts: &CheckOptions,
) -> (String, Option<serde_json::Value>) {
    let c = check(s, req, opts);
    let e = crate::service::decision_event(req, &c, "default", Some(s.clone()), opts);
    let details = e.details.to_value();
    let stored = stored_canonically(e);
    (stored.actor, details.get("forwarded_by").cloned())
}

/// `e` as the store keeps it, its details checked to be the canonical text of what they
/// hold: written in one pass, keys in byte order, not built and re-sorted.
fn stored_canonically(e: esm_audit::Event) -> esm_audit::event::Prepared {
    let details = e.details.to_value();
    let stored = esm_audit::event::prepare(e, &|v| v.to_owned()).unwrap();
    let mut canonical = String::new();
    assert!(esm_audit::event::canonical_json(
        &details,
        &mut canonical,
        0,
        1 << 20
    ));
    assert_eq!(stored.details, canonical);
    stored
}

/// The record's actor is the caller the policy saw; with `xfcc` that is the forwarded SPIFFE
/// ID, and the peer that forwarded it is kept beside it.
#[test]
fn a_decision_behind_a_proxy_records_the_forwarded_caller_and_who_forwarded_it() {
    let s = std::sync::Arc::new(set(BY_METHOD));
    let xfcc = with_xfcc();
    let forwarded = behind_a_proxy("By=spiffe://td/envoy;URI=spiffe://td/web");
    assert_eq!(
        actor_of(&s, &forwarded, &xfcc),
        ("spiffe://td/web".into(), Some("10.0.0.1".into()))
    );
    // Without `xfcc` the policy saw no caller identity: the peer alone is named.
    assert_eq!(
        actor_of(&s, &forwarded, &CheckOptions::default()),
        ("10.0.0.1".into(), None)
    );
    // A header the view refuses (an element before the edge's) names no one either.
    let spoofed = behind_a_proxy("URI=spiffe://td/admin,By=spiffe://td/envoy;Hash=0a");
    assert_eq!(actor_of(&s, &spoofed, &xfcc), ("10.0.0.1".into(), None));
    // A principal Envoy verified is the caller, whatever the header says.
    let direct = http_request(
        "GET",
        "/",
        &[("x-forwarded-client-cert", "URI=spiffe://td/admin")],
        "",
    );
    assert_eq!(
        actor_of(&s, &direct, &xfcc),
        ("spiffe://example.org/web".into(), None)
    );
}

/// Only a caller the policy could have read as `input.source.spiffe_id` becomes the actor;
/// a header that does not name one leaves the record to the peer.
#[test]
fn a_record_names_no_forwarded_caller_the_policy_did_not_see() {
    let s = std::sync::Arc::new(set(BY_METHOD));
    let xfcc = with_xfcc();
    for header in [
        // The last element's URI is not a SPIFFE ID.
        "By=spiffe://td/envoy;URI=https://td/web",
        // A trust domain in capitals is not one either.
        "By=spiffe://td/envoy;URI=spiffe://TD/web",
        // Unterminated quote: malformed, no identity.
        r#"By=spiffe://td/envoy;Subject="CN=x;URI=spiffe://td/admin"#,
        // The URI inside a quoted subject is the subject's text, not a URI pair.
        r#"By=spiffe://td/envoy;Subject="CN=x;URI=spiffe://td/admin""#,
        // Two URIs in the last element: which one called is not known.
        "By=spiffe://td/envoy;URI=spiffe://td/web;URI=spiffe://td/admin",
    ] {
        assert_eq!(
            actor_of(&s, &behind_a_proxy(header), &xfcc),
            ("10.0.0.1".into(), None),
            "{header}"
        );
    }
    // Refused before the policy ran (a bad escape in the path): no policy saw a caller.
    let mut refused = behind_a_proxy("By=spiffe://td/envoy;URI=spiffe://td/web");
    http_of(&mut refused).path = "/%zz".into();
    let c = check(&s, &refused, &xfcc);
    assert!(matches!(c.failure, Some((Failure::Input, _))), "{c:?}");
    assert_eq!(actor_of(&s, &refused, &xfcc), ("10.0.0.1".into(), None));
}

/// The forwarding peer is named by its principal when it has one that is not a SPIFFE ID,
/// and not at all when it has neither principal nor address (a Unix socket).
#[test]
fn a_forwarding_peer_is_named_by_what_envoy_knows_of_it() {
    let s = std::sync::Arc::new(set(BY_METHOD));
    let xfcc = with_xfcc();
    let header = "By=spiffe://td/envoy;URI=spiffe://td/web";
    let mut dns_peer = behind_a_proxy(header);
    if let Some(src) = dns_peer.attributes.as_mut().and_then(|a| a.source.as_mut()) {
        src.principal = "edge.plant-7.example".into();
    }
    assert_eq!(
        actor_of(&s, &dns_peer, &xfcc),
        (
            "spiffe://td/web".into(),
            Some("edge.plant-7.example".into())
        )
    );
    let mut unix_peer = behind_a_proxy(header);
    if let Some(a) = unix_peer.attributes.as_mut() {
        a.source = None;
    }
    assert_eq!(
        actor_of(&s, &unix_peer, &xfcc),
        ("spiffe://td/web".into(), None)
    );
}

/// Envoy's `encode_raw_headers` sends `header_map`, not `headers`: the record reads the
/// forwarded caller there too, as the policy did.
#[test]
fn a_forwarded_caller_in_raw_headers_is_recorded() {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    let s = std::sync::Arc::new(set(r#"package envoy.authz
default allow := false
allow if input.source.spiffe_id == "spiffe://td/web"
"#));
    let mut req = behind_a_proxy("");
    let h = http_of(&mut req);
    h.headers.clear();
    h.header_map = Some(HeaderMap {
        headers: vec![HeaderValue {
            key: "X-Forwarded-Client-Cert".into(),
            raw_value: b"By=spiffe://td/envoy;URI=spiffe://td/web".to_vec(),
            ..Default::default()
        }],
    });
    let xfcc = with_xfcc();
    assert!(
        check(&s, &req, &xfcc).decision.allowed,
        "the policy saw the caller"
    );
    assert_eq!(
        actor_of(&s, &req, &xfcc),
        ("spiffe://td/web".into(), Some("10.0.0.1".into()))
    );
}

#[test]
fn a_spoofed_xfcc_identity_is_not_the_caller() {
    let s = set(r#"package envoy.authz
default allow := false
allow if input.source.spiffe_id == "spiffe://td/admin"
"#);
    let opts = with_xfcc();
    for spoof in [
        // URI hidden in the quoted subject of the real caller's certificate.
        r#"By=spiffe://td/envoy;Hash=0a;Subject="CN=x;URI=spiffe://td/admin";URI=spiffe://td/web"#,
        // An element the client wrote before the one the edge Envoy appended.
        "URI=spiffe://td/admin,By=spiffe://td/envoy;Hash=0a;URI=spiffe://td/web",
        // Malformed: no identity at all, as when the header is absent.
        r#"By=spiffe://td/envoy;Subject="CN=x;URI=spiffe://td/admin"#,
    ] {
        let c = check(&s, &behind_a_proxy(spoof), &opts);
        assert!(!c.decision.allowed, "{spoof}");
    }
    // The genuine last element is read.
    let c = check(
        &s,
        &behind_a_proxy("URI=spiffe://td/web,By=spiffe://td/envoy;URI=spiffe://td/admin"),
        &opts,
    );
    assert!(c.decision.allowed);
}
