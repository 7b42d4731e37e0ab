//! Neither the decision memo nor building only the input a policy reads ever changes a
//! decision: every shipped policy set and OPA-Envoy-style policies using the language
//! features such policies use decide a stream of thousands of generated requests both ways —
//! projected input and memo, whole input and fresh evaluation — and must agree on every one
//! (the same value, or both an error), while the memo really answers many of them.

use std::path::Path;

use crate::input::tests_support::peer_at;
use crate::input::{build, build_projected, InputOptions};
use crate::policy_set::{read_dir, PolicySet, SourceFile};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

const RULE: &str = "data.envoy.authz.allow";

/// A small deterministic generator, so a disagreement is reproducible from its index.
struct Lcg(u64);

impl Lcg {
    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        xs[((self.0 >> 33) as usize) % xs.len()].clone()
    }
}

/// Every `spiffe://…` and `/…` string literal in the set, so generated requests hit the
/// policy's own grants as well as miss them.
fn literals(files: &[SourceFile], prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for f in files {
        for part in f.text.split('"').skip(1).step_by(2) {
            if part.starts_with(prefix) && !out.iter().any(|o| o == part) {
                out.push(part.to_owned());
            }
        }
    }
    out
}

pub(crate) fn requests(files: &[SourceFile], n: usize) -> Vec<CheckRequest> {
    let mut ids = literals(files, "spiffe://");
    ids.extend(["".into(), "spiffe://example.org/ns/other/sa/x".into()]);
    let mut paths = literals(files, "/");
    paths.extend([
        "/".into(),
        "/admin".into(),
        "/items/7?full=1&tag=a&tag=b".into(),
        "/reports/q3%20final".into(),
        "/commands/stop".into(),
        "/bad%zz".into(),
    ]);
    let methods = ["GET", "POST", "DELETE", "PUT"];
    let roles = ["", "viewer", "operator", "admin"];
    let ports = [502, 4840, 8080, 443];
    let ips = ["10.0.0.1", "192.168.7.20", "127.0.0.1"];
    let bodies = [
        ("", ""),
        (
            "application/json",
            r#"{"op":"stop","line":3,"tags":["a","b"]}"#,
        ),
        ("application/json", "[1, 2"),
        ("application/x-www-form-urlencoded", "op=start&line=4"),
    ];
    let mut g = Lcg(7);
    (0..n)
        .map(|_| {
            let src = peer_at(g.pick(&ips), 51000, &g.pick(&ids));
            let dst = peer_at("10.0.0.2", g.pick(&ports), &g.pick(&ids));
            let http = g.pick(&[true, true, true, false]).then(|| {
                let (ctype, body) = g.pick(&bodies);
                let mut headers: std::collections::HashMap<String, String> = [
                    (":authority", "api.local"),
                    ("x-request-id", "6f2c1a9e"),
                    ("content-type", ctype),
                    ("x-role", g.pick(&roles)),
                ]
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
                if g.pick(&[false, true]) {
                    headers.insert("authorization".into(), "Bearer abc.def.ghi".into());
                }
                HttpRequest {
                    method: g.pick(&methods).to_string(),
                    path: g.pick(&paths),
                    host: "api.local".into(),
                    headers,
                    body: body.into(),
                    ..Default::default()
                }
            });
            CheckRequest {
                attributes: Some(AttributeContext {
                    source: Some(src),
                    destination: Some(dst),
                    request: Some(Request { time: None, http }),
                    ..Default::default()
                }),
            }
        })
        .collect()
}

/// Decides `n` generated requests both ways.
fn assert_agree(name: &str, files: Vec<SourceFile>, n: usize) {
    let memo = PolicySet::compile(files.clone(), RULE).unwrap();
    assert!(memo.memoized(), "{name} is not memoized: {:?}", memo.reads);
    let fresh = PolicySet::compile(files.clone(), RULE)
        .unwrap()
        .with_memo_capacity(0);
    // Keyed from the built input, as a set whose reads the request key cannot map is.
    let by_value = PolicySet::compile(files.clone(), RULE).unwrap();
    let (mut allowed, mut hits) = (0, 0);
    for (i, req) in requests(&files, n).iter().enumerate() {
        let opts = InputOptions::default();
        let whole = build(req, &opts);
        let projected = build_projected(req, &opts, memo.projection());
        assert_eq!(
            whole.is_ok(),
            projected.is_ok(),
            "{name}: request {i} refused one way only"
        );
        let got = memo.decide_request(req, &opts);
        let (Ok(whole), Ok(projected)) = (whole, projected) else {
            assert!(
                matches!(got, Err(crate::Error::Request(_))),
                "{name}: request {i} refused by the input only"
            );
            continue;
        };
        let got = got.map_err(|_| ());
        let want = fresh.eval(whole).map_err(|_| ());
        let valued = by_value.decide(projected).map(|(v, _)| v).map_err(|_| ());
        assert_eq!(
            valued, want,
            "{name}: request {i} decided differently by value key"
        );
        hits += usize::from(matches!(got, Ok((_, true))));
        let got = got.map(|(v, _)| v);
        assert_eq!(got, want, "{name}: request {i} decided differently");
        let yes = regorus::Value::from(true);
        allowed += usize::from(matches!(&got, Ok(v) if v == &yes || v["allowed"] == yes));
    }
    // The generator must reach both outcomes, or agreeing proves little.
    assert!(
        allowed > 0 && allowed < n,
        "{name}: {allowed} of {n} allowed"
    );
    assert!(hits > n / 5, "{name}: only {hits} of {n} from the memo");
}

#[test]
fn memo_agrees_with_fresh_evaluation_on_every_shipped_policy_set() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut dirs = vec![root.join("default")];
    for e in std::fs::read_dir(root.join("examples")).unwrap() {
        dirs.push(e.unwrap().path());
    }
    for dir in dirs {
        let files = read_dir(&dir).unwrap();
        if files.iter().any(|f| f.text.contains("io.jwt.")) {
            // Token expiry depends on the clock: never memoized.
            assert!(!PolicySet::compile(files, RULE).unwrap().memoized());
            continue;
        }
        assert_agree(&dir.display().to_string(), files, 3000);
    }
}

fn rego(text: &str) -> Vec<SourceFile> {
    vec![SourceFile {
        path: "p.rego".into(),
        text: text.into(),
    }]
}

/// OPA-Envoy-style policies using the language features such policies use.
pub(crate) const OPA_ENVOY_STYLE: [&str; 3] = [
    // The OPA-Envoy tutorial's shape: an import alias, parsed_path, a default object.
    r#"package envoy.authz
import rego.v1
import input.attributes.request.http as http_request
default allow := {"allowed": false, "http_status": 401, "body": "no"}
allow := {"allowed": true, "headers": {"x-path": concat("/", input.parsed_path)}} if {
http_request.method == "GET"
input.parsed_path[0] in {"items", "reports"}
}
allow := {"allowed": true, "headers": {"x-op": input.parsed_body.op}} if {
http_request.method == "POST"
input.parsed_body.op in {"start", "stop"}
}"#,
    // Partial sets, every, comprehensions, functions, else chains.
    r#"package envoy.authz
import rego.v1
deny contains "admin path" if startswith(input.attributes.request.http.path, "/admin")
deny contains msg if {
some k, v in input.parsed_query
count(v) > 1
msg := sprintf("repeated %s", [k])
}
role := r if { r := input.attributes.request.http.headers["x-role"] } else := "anonymous"
level(r) := 2 if r == "operator"
level(r) := 1 if r == "viewer"
level(r) := 0 if not r in {"operator", "viewer"}
allow := {"allowed": count(deny) == 0, "headers": {"x-level": format_int(level(role), 10), "x-deny": concat(",", sort([d | some d in deny]))}} if {
every h in ["x-request-id"] { input.attributes.request.http.headers[h] }
}"#,
    // Network filter: CIDRs, ports, regexes, globs, object.get.
    r#"package envoy.authz
import rego.v1
default allow := false
src_ip := input.attributes.source.address.socketAddress.address
allow if {
not input.attributes.request.http
net.cidr_contains("192.168.0.0/16", src_ip)
object.get(input.attributes.destination.address.socketAddress, "portValue", 0) in {502, 4840}
}
allow if {
regex.match(`^spiffe://example\.org/ns/[a-z]+/sa/web$`, input.source.spiffe_id)
glob.match("/items/*", ["/"], input.attributes.request.http.path)
}
allow if {
input.attributes.request.http.headers.authorization
parts := split(input.attributes.request.http.headers.authorization, " ")
count(parts) == 2
parts[0] == "Bearer"
json.marshal({"n": count(parts[1])}) == "{\"n\":11}"
}"#,
];

#[test]
fn memo_agrees_on_opa_envoy_style_policies() {
    let policies = OPA_ENVOY_STYLE;
    for (i, p) in policies.iter().enumerate() {
        let mut files = rego(p);
        files.push(SourceFile {
            path: "ids.rego".into(),
            text: "package ids\nweb := \"spiffe://example.org/ns/prod/sa/web\"\n".into(),
        });
        assert_agree(&format!("policy {i}"), files, 3000);
    }
}
