#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

fn reads(text: &str) -> InputReads {
    analyze(&[SourceFile {
        path: "p.rego".into(),
        text: text.into(),
    }])
}

fn paths(text: &str) -> Vec<String> {
    reads(text).paths.iter().map(|p| p.join(".")).collect()
}

#[test]
fn constant_dot_and_bracket_steps_make_a_path() {
    let p = paths(
        r#"package p
allow if {
    input.source.spiffe_id == "x"
    input.attributes.request.http.headers["x-role"] == "admin"
}"#,
    );
    assert_eq!(
        p,
        ["attributes.request.http.headers.x-role", "source.spiffe_id"]
    );
}

#[test]
fn a_variable_step_keeps_the_whole_subtree() {
    let p = paths("package p\nallow if { some h; input.attributes.request.http.headers[h] }");
    assert_eq!(p, ["attributes.request.http.headers"]);
    let p = paths("package p\nallow if input.parsed_path[0] == \"a\"");
    assert_eq!(p, ["parsed_path"]);
}

#[test]
fn input_used_whole_reads_everything() {
    for text in [
        "package p\nallow if { x := input; x.a }",
        "package p\nallow if { walk(input, [p, v]) }",
        "package p\nallow if object.get(input, [\"a\"], 1) == 1",
        "package p\nallow if input[k] == 1",
    ] {
        assert!(reads(text).reads_everything(), "{text}");
    }
}

#[test]
fn import_aliases_are_followed_and_the_import_itself_reads_nothing() {
    let p = paths(
        r#"package envoy.authz
import rego.v1
import input.attributes.request.http as http_request
import input.parsed_path
allow if {
    http_request.method == "GET"
    parsed_path[0] == "items"
}"#,
    );
    assert_eq!(p, ["attributes.request.http.method", "parsed_path"]);
}

#[test]
fn a_rule_aliasing_a_subtree_reads_the_subtree() {
    let p =
        paths("package p\nhttp := input.attributes.request.http\nallow if http.method == \"GET\"");
    assert_eq!(p, ["attributes.request.http"]);
}

#[test]
fn with_input_targets_are_not_reads() {
    let p = paths(
        "package p\nallow if input.a == 1\ntest_a if allow with input as {\"a\": 1}\ntest_b if allow with input.a as 1",
    );
    assert_eq!(p, ["a"]);
}

#[test]
fn strings_and_comments_are_not_reads() {
    let p = paths("package p\n# input.secret\nallow if { \"input.b\" == input.a }");
    assert_eq!(p, ["a"]);
}

#[test]
fn nested_paths_collapse_into_their_prefix() {
    let p = paths("package p\nallow if { input.a.b; input.a; input.c[\"d\"]; input.c.e }");
    assert_eq!(p, ["a", "c.d", "c.e"]);
}

#[test]
fn an_escaped_bracket_key_is_not_constant() {
    let p = paths("package p\nallow if input.h[\"a\\\"b\"] == 1");
    assert_eq!(p, ["h"]);
}

#[test]
fn clock_randomness_and_network_make_a_policy_nondeterministic() {
    assert!(reads("package p\nallow if input.a").deterministic);
    for call in [
        "time.now_ns()",
        "rand.intn(\"x\", 10)",
        "uuid.rfc4122(\"x\")",
        "http.send({})",
        "io.jwt.decode_verify(input.t, {})",
        "opa.runtime()",
        "crypto.x509.parse_and_verify_certificates(input.c)",
    ] {
        let text = format!("package p\nallow if {call}");
        assert!(!reads(&text).deterministic, "{call}");
    }
}

#[test]
fn text_regorus_cannot_tokenize_is_unknown() {
    let r = reads("package p\nallow if \"unterminated");
    assert!(r.reads_everything());
    assert!(!r.deterministic);
}

#[test]
fn only_rego_files_are_analysed() {
    let r = analyze(&[SourceFile {
        path: "data.json".into(),
        text: "{\"input\": 1}".into(),
    }]);
    assert!(r.paths.is_empty());
    assert!(r.deterministic);
}

#[test]
fn the_default_policy_reads_identities_method_and_path_only() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default");
    let files = crate::policy_set::read_dir(&dir).unwrap();
    let r = analyze(&files);
    let p: Vec<String> = r.paths.iter().map(|p| p.join(".")).collect();
    assert_eq!(
        p,
        [
            "attributes.request.http.method",
            "attributes.request.http.path",
            "destination.spiffe_id",
            "source.spiffe_id"
        ]
    );
    assert!(r.deterministic);
}

#[test]
fn text_after_a_nul_byte_is_not_hidden_from_the_analysis() {
    let text = "package envoy.authz\nimport rego.v1\ndefault allow := false\nallow if input.a\n\u{0}allow if input.b\n";
    let files = vec![SourceFile {
        path: "p.rego".into(),
        text: text.into(),
    }];
    let r = analyze(&files);
    // If regorus compiles the rule after the NUL, the analysis must have seen it.
    if let Ok(set) = crate::policy_set::PolicySet::compile(files, "data.envoy.authz.allow") {
        let input = regorus::Value::from_json_str(r#"{"a": false, "b": true}"#).unwrap();
        let allowed = set.eval(input).unwrap() == regorus::Value::from(true);
        let saw_b = r.paths.iter().any(|p| p == &["b".to_string()]);
        assert!(!allowed || saw_b || r.reads_everything(), "{r:?}");
    }
}

#[test]
fn deeply_nested_and_long_policies_are_analysed_without_overflow() {
    let deep = format!(
        "package p\nallow if {}input.a{} == 1",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let r = reads(&deep);
    assert!(r.paths.iter().any(|p| p == &["a".to_string()]) || r.reads_everything());
    // Past regorus' own file limits the lexer refuses: then everything is assumed read.
    let long = format!("package p\n{}", "x := input.a.b.c\n".repeat(100_000));
    let r = reads(&long);
    let abc = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    assert!(
        r.paths == vec![abc] || (r.reads_everything() && !r.deterministic),
        "{r:?}"
    );
}
