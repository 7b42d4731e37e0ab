#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;
use crate::input::build_projected;
use crate::input::tests_support::peer_at;
use crate::policy_set::{read_dir, PolicySet};
use crate::projection::Projection;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::Request;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use proptest::prelude::*;

fn reads(paths: &[&str]) -> InputReads {
    InputReads::of_paths(paths)
}

fn key(plan: &KeyPlan, req: &CheckRequest, opts: &InputOptions) -> Option<Vec<u8>> {
    let view = View::of(req).ok()?;
    let mut out = Vec::new();
    plan.write(&view, opts, &mut out).then_some(out)
}

#[test]
fn shipped_policy_sets_are_keyed_from_the_request_unless_they_read_whole_objects() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    // The network example reads `input.attributes.request.http` whole (whether there is
    // one): its key is the built object's.
    for (dir, keyed) in [
        ("default", true),
        ("examples/rbac", true),
        ("examples/rate_tiers", true),
        ("examples/network", false),
    ] {
        let set = PolicySet::compile(read_dir(&root.join(dir)).unwrap(), "data.envoy.authz.allow")
            .unwrap();
        assert!(set.memoized(), "{dir}");
        assert_eq!(
            KeyPlan::of(&set.reads).is_some(),
            keyed,
            "{dir}: {:?}",
            set.reads
        );
    }
}

#[test]
fn paths_not_mapped_leave_no_plan() {
    for p in [
        "attributes.request.http",
        "attributes.request.http.headers",
        "attributes.metadataContext.filterMetadata",
        "attributes.request.time",
        "attributes.request.http.nonsense",
        "attributes.tlsSession.sni",
        "attributes",
        "something_else",
    ] {
        assert_eq!(KeyPlan::of(&reads(&[p])), None, "{p}");
    }
}

#[test]
fn values_that_never_change_add_nothing_to_the_key() {
    let plan = KeyPlan::of(&reads(&["version.ext_authz", "source.other"])).unwrap();
    assert!(plan.parts.is_empty());
}

#[test]
fn a_key_over_the_bound_is_not_written() {
    let plan = KeyPlan::of(&reads(&["attributes.request.http.path"])).unwrap();
    let mut req = request(&HTTP);
    set_http(&mut req, |h| h.path = format!("/{}", "a".repeat(MAX_KEY)));
    assert_eq!(key(&plan, &req, &InputOptions::default()), None);
}

#[test]
fn raw_header_maps_are_keyed_as_the_input_reads_them() {
    let plan = KeyPlan::of(&reads(&["attributes.request.http.headers.x-role"])).unwrap();
    let raw = |parts: &[(&str, &str)]| {
        let mut req = request(&HTTP);
        set_http(&mut req, |h| {
            h.headers.clear();
            h.header_map = Some(HeaderMap {
                headers: parts
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: (*k).into(),
                        raw_value: v.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .collect(),
            });
        });
        req
    };
    let a = raw(&[("X-Role", "admin"), ("x-role", "viewer")]);
    let b = raw(&[("x-role", "admin,viewer")]);
    let c = raw(&[("x-role", "admin")]);
    let opts = InputOptions::default();
    assert_eq!(key(&plan, &a, &opts), key(&plan, &b, &opts));
    assert_ne!(key(&plan, &a, &opts), key(&plan, &c, &opts));
}

#[test]
fn a_memo_hit_is_refused_where_a_fresh_evaluation_would_be() {
    let set = PolicySet::compile(
        vec![crate::policy_set::SourceFile {
            path: "p.rego".into(),
            text: "package envoy.authz\nimport rego.v1\nallow if input.attributes.request.http.method == \"GET\"\n".into(),
        }],
        "data.envoy.authz.allow",
    )
    .unwrap();
    let ok = HTTP;
    let opts = crate::check::CheckOptions::default();
    assert!(
        crate::check::check(&set, &request(&ok), &opts)
            .decision
            .allowed
    );
    // The same key (the method), with a body that is not the JSON it claims to be, then a
    // path with a bad escape: both refused, though the memo holds the key.
    for bad in [
        Req {
            ctype: Some("application/json"),
            body: "[1,",
            ..ok.clone()
        },
        Req {
            path: "/bad%zz",
            ..ok.clone()
        },
    ] {
        let c = crate::check::check(&set, &request(&bad), &opts);
        assert_eq!(
            c.failure.map(|f| f.0),
            Some(crate::check::Failure::Input),
            "{bad:?}"
        );
    }
    let again = crate::check::check(&set, &request(&ok), &opts);
    assert!(again.memoized && again.decision.allowed);
}

fn set_http(req: &mut CheckRequest, f: impl FnOnce(&mut HttpRequest)) {
    let h = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    f(h);
}

/// A request drawn from small alphabets, so that two draws often agree on some fields and
/// differ on others.
#[derive(Debug, Clone, Default)]
struct Req {
    http: bool,
    method: &'static str,
    path: &'static str,
    role: Option<&'static str>,
    xfcc: Option<&'static str>,
    ctype: Option<&'static str>,
    body: &'static str,
    src: &'static str,
    dst: &'static str,
    port: u32,
    site: Option<&'static str>,
}

const HTTP: Req = Req {
    http: true,
    method: "GET",
    path: "/items",
    role: None,
    xfcc: None,
    ctype: None,
    body: "",
    src: "",
    dst: "",
    port: 443,
    site: None,
};

fn request(r: &Req) -> CheckRequest {
    let mut headers: std::collections::HashMap<String, String> = [
        ("x-request-id", Some("1")),
        ("x-role", r.role),
        ("x-forwarded-client-cert", r.xfcc),
        ("content-type", r.ctype),
    ]
    .iter()
    .filter_map(|(k, v)| Some((k.to_string(), (*v)?.to_string())))
    .collect();
    headers.insert("x-other".into(), r.path.len().to_string());
    let http = HttpRequest {
        method: r.method.into(),
        path: r.path.into(),
        host: "api.local".into(),
        headers,
        body: r.body.into(),
        ..Default::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer_at("10.0.0.1", r.port, r.src)),
            destination: Some(peer_at("10.0.0.2", 8080, r.dst)),
            request: Some(Request {
                time: None,
                http: r.http.then_some(http),
            }),
            context_extensions: r
                .site
                .map(|s| [("site".to_string(), s.to_string())].into())
                .unwrap_or_default(),
            ..Default::default()
        }),
    }
}

fn req_strategy() -> impl Strategy<Value = Req> {
    let ids = prop::sample::select(vec![
        "",
        "spiffe://td/web",
        "spiffe://td/api",
        "CN=web",
        "spiffe:// bad",
    ]);
    let xfcc = prop::option::of(prop::sample::select(vec![
        "By=spiffe://td/api;URI=spiffe://td/web",
        "URI=spiffe://td/api",
        "URI=spiffe://td/web,URI=spiffe://td/api",
        "garbage;;=",
    ]));
    (
        (
            any::<bool>(),
            prop::sample::select(vec!["GET", "POST", ""]),
            prop::sample::select(vec![
                "/items/7",
                "/items/7?full=1",
                "/items/7?full=2#top",
                "/a%20b",
                "/bad%zz",
                "",
            ]),
            prop::option::of(prop::sample::select(vec!["admin", "viewer", ""])),
            xfcc,
        ),
        (
            prop::option::of(prop::sample::select(vec![
                "application/json",
                "application/x-www-form-urlencoded",
                "text/plain",
            ])),
            prop::sample::select(vec!["", r#"{"op":"stop"}"#, "op=start", "[1,"]),
            ids.clone(),
            ids,
            prop::sample::select(vec![443u32, 8443]),
            prop::option::of(prop::sample::select(vec!["plant-7", "plant-8"])),
        ),
    )
        .prop_map(
            |((http, method, path, role, xfcc), (ctype, body, src, dst, port, site))| Req {
                http,
                method,
                path,
                role,
                xfcc,
                ctype,
                body,
                src,
                dst,
                port,
                site,
            },
        )
}

/// Read-path sets covering every mapped part, alone and together.
const READS: &[&[&str]] = &[
    &["source.spiffe_id", "destination.spiffe_id"],
    &[
        "attributes.request.http.method",
        "attributes.request.http.path",
    ],
    &["attributes.request.http.headers.x-role", "source_principal"],
    &["parsed_path", "parsed_query.full"],
    &["parsed_body.op", "truncated_body"],
    &[
        "attributes.source.address.socketAddress.portValue",
        "attributes.destination.principal",
    ],
    &["attributes.contextExtensions.site", "source"],
    &[
        "attributes.request.http.host",
        "attributes.request.http.body",
        "attributes.request.http.size",
        "version",
    ],
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The soundness of a memo hit: two requests with one key have one input (what the set
    /// reads of it), so a deterministic policy cannot tell them apart. Refusal is not part
    /// of the key: a hit is checked for it separately.
    #[test]
    fn requests_with_one_key_have_one_input(a in req_strategy(), b in req_strategy(), xfcc in any::<bool>()) {
        let opts = InputOptions { xfcc, ..Default::default() };
        let (a, b) = (request(&a), request(&b));
        for paths in READS {
            let r = reads(paths);
            let plan = KeyPlan::of(&r).unwrap();
            let projection = Projection::of(&r);
            let (Some(ka), Some(kb)) = (key(&plan, &a, &opts), key(&plan, &b, &opts)) else {
                continue;
            };
            let ia = build_projected(&a, &opts, &projection).ok();
            let ib = build_projected(&b, &opts, &projection).ok();
            if ka == kb {
                if let (Some(ia), Some(ib)) = (&ia, &ib) {
                    prop_assert_eq!(ia, ib, "{:?}", paths);
                }
            }
            // The same request always gets the same key.
            prop_assert_eq!(Some(ka), key(&plan, &a, &opts));
        }
    }
}

#[test]
fn grpc_bodies_that_differ_only_in_bytes_that_are_not_utf8_get_different_keys() {
    let plan = KeyPlan::of(&reads(&["parsed_body.id"])).unwrap();
    let grpc = |path: &str, raw: &[u8]| {
        let mut req = request(&HTTP);
        set_http(&mut req, |h| {
            h.path = path.into();
            h.headers
                .insert("content-type".into(), "application/grpc".into());
            h.body.clear();
            h.raw_body = raw.to_vec();
        });
        req
    };
    let opts = InputOptions::default();
    // Both decode lossily to the same text (one U+FFFD each).
    let a = grpc("/s.S/M", b"\x00\x00\x00\x00\x02\x08\xff");
    let b = grpc("/s.S/M", b"\x00\x00\x00\x00\x02\x08\xfe");
    assert_eq!(
        String::from_utf8_lossy(b"\x08\xff"),
        String::from_utf8_lossy(b"\x08\xfe")
    );
    assert_ne!(key(&plan, &a, &opts), key(&plan, &b, &opts));
    // The same bytes sent to another method decode as another message.
    let c = grpc("/s.S/N", b"\x00\x00\x00\x00\x02\x08\xff");
    assert_ne!(key(&plan, &a, &opts), key(&plan, &c, &opts));
}
