#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::jwt_builtins::JwtKeys;
use crate::policy_set::PolicySet;

fn file(text: &str) -> SourceFile {
    SourceFile {
        path: "p.rego".into(),
        text: text.into(),
    }
}

const OUTPUT_FORM: &str = r#"package t

import rego.v1

valid if {
	io.jwt.verify_hs256(input.token, "secret", ok)   # OPA's output form
	ok
}

parts if {
	io.jwt.decode(input.token, [h, p, _])
	p.sub == "alice"
}

multi if {
	io.jwt.decode(
		input.token,
		[_, claims,
		 _])
	claims.sub == "alice"
}
"#;

#[test]
fn finds_output_arguments_with_their_lines_and_rewrites() {
    let found = scan(OUTPUT_FORM, MAX_LINE);
    assert_eq!(found.len(), 3);
    assert_eq!(found[2].line, 16);
    assert_eq!(found[0].line, 6);
    assert!(found[0].construct.contains("io.jwt.verify_hs256"));
    assert!(found[0]
        .suggestion
        .contains(r#"ok = io.jwt.verify_hs256(input.token, "secret")"#));
    assert_eq!(found[1].line, 11);
    let rewritten = rewrite(OUTPUT_FORM).unwrap();
    assert!(rewritten.contains(r#"ok = io.jwt.verify_hs256(input.token, "secret")   # OPA"#));
    assert!(rewritten.contains("[h, p, _] = io.jwt.decode(input.token)"));
    assert!(rewritten.contains("[_, claims, _] = io.jwt.decode(\n\t\tinput.token)\n\n"));
    assert_eq!(rewritten.lines().count(), OUTPUT_FORM.lines().count());
}

#[test]
fn rewritten_output_form_policies_run() {
    let files = rewrite_files(vec![file(OUTPUT_FORM)]);
    let set = PolicySet::compile_with(files, "data.t.valid", &JwtKeys::default()).unwrap();
    let token = crate::jwt::tests::hs256(b"secret", serde_json::json!({"sub": "alice"}));
    let input = regorus::Value::from(serde_json::json!({ "token": token }));
    assert_eq!(set.eval(input.clone()).unwrap(), regorus::Value::Bool(true));
    for rule in ["data.t.parts", "data.t.multi"] {
        assert_eq!(
            set.eval_rule(rule, input.clone()).unwrap(),
            regorus::Value::Bool(true)
        );
    }
}

#[test]
fn leaves_calls_with_the_right_arity_strings_and_comments_alone() {
    let text = r#"package t
x := io.jwt.decode(input.t)
# io.jwt.decode(a, b) in a comment
s := "io.jwt.decode(a, b)"
r := `io.jwt.decode(a, b)`
y := my.io.jwt.decode(a, b)
"#;
    assert!(scan(text, MAX_LINE).is_empty());
    assert_eq!(rewrite(text), None);
}

#[test]
fn reports_but_does_not_rewrite_calls_inside_expressions() {
    let text = "package t\nv := [x | io.jwt.decode(input.t, x)]\nw if count(input.a, n); n > 1\n";
    let found = scan(text, MAX_LINE);
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|f| f.rewrite.is_none()));
    assert_eq!(rewrite(text), None);
}

#[test]
fn names_long_lines_and_explains_the_engine_error() {
    let long = format!("package t\n\ncert := \"{}\"\n", "A".repeat(MAX_LINE + 10));
    let found = scan(&long, MAX_LINE);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 3);
    assert!(found[0].suggestion.contains("concat"));
    let files = vec![file(&long)];
    let err = PolicySet::compile_with(files.clone(), "data.t.cert", &JwtKeys::default())
        .map_err(|e| explain(&files, e))
        .unwrap_err()
        .to_string();
    assert!(err.contains("p.rego:3"), "{err}");
    assert!(err.contains("concat"), "{err}");
    assert!(
        err.len() < 1000,
        "the long line is not echoed: {} bytes",
        err.len()
    );
}

#[test]
fn lines_longer_than_regorus_default_compile() {
    let cert = "B".repeat(4096);
    let text = format!("package t\n\nimport rego.v1\n\ncert := \"{cert}\"\n");
    let set =
        PolicySet::compile_with(vec![file(&text)], "data.t.cert", &JwtKeys::default()).unwrap();
    let v = set
        .eval(regorus::Value::from(serde_json::json!({})))
        .unwrap();
    assert_eq!(v, regorus::Value::from(cert));
}

#[test]
fn explains_the_unsafe_variable_of_an_output_argument() {
    // Not rewritten: what the engine says about OPA's form as written.
    let files = vec![file(OUTPUT_FORM)];
    let err = PolicySet::compile_with(files.clone(), "data.t.valid", &JwtKeys::default())
        .map_err(|e| explain(&files, e))
        .unwrap_err()
        .to_string();
    assert!(err.contains("p.rego:6"), "{err}");
    assert!(
        err.contains(r#"ok = io.jwt.verify_hs256(input.token, "secret")"#),
        "{err}"
    );
    assert!(err.contains("unsafe"), "{err}");
}

#[test]
fn output_arguments_left_after_rewriting_refuse_the_set() {
    let files = rewrite_files(vec![file(OUTPUT_FORM)]);
    assert!(refuse_output_arguments(&files).is_ok());
    let inside = "package t\n\nv := [x | io.jwt.decode(input.t, x)]\n";
    let err = refuse_output_arguments(&rewrite_files(vec![file(inside)]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("p.rego:3"), "{err}");
    assert!(err.contains("x = io.jwt.decode(input.t)"), "{err}");
}

#[test]
fn other_errors_pass_unchanged() {
    let err = Error::policy("p.rego", "rego_parse_error: unexpected }");
    let files = vec![file(OUTPUT_FORM)];
    assert_eq!(
        explain(&files, err).to_string(),
        "policy p.rego: rego_parse_error: unexpected }"
    );
}

#[test]
fn hostile_sources_do_not_hang_or_panic() {
    let mut inputs = vec![
        "io.jwt.decode(".to_owned(),
        "io.jwt.decode(\"unterminated".to_owned(),
        "io.jwt.decode(`raw".to_owned(),
        "io.jwt.decode(a))))]]]}}},,,".to_owned(),
        "io.jwt.decode(\"\\".to_owned(),
        format!("io.jwt.decode({}", "(".repeat(100_000)),
        format!("io.jwt.decode({})", "a, ".repeat(100_000)),
        "é io.jwt.decode(a, ü) ✓".to_owned(),
        "io.jwt.decode".repeat(10_000),
        format!("{}\n", "io.jwt.decode(a, b)\n".repeat(1000)),
    ];
    inputs.push(inputs.concat());
    for text in &inputs {
        let found = scan(text, MAX_LINE);
        assert!(found.len() <= 2 * MAX_FINDINGS);
        if let Some(out) = rewrite(text) {
            assert_eq!(out.lines().count(), text.lines().count());
        }
    }
}
