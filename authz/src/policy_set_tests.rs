#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

fn file(path: &str, text: &str) -> SourceFile {
    SourceFile {
        path: path.into(),
        text: text.into(),
    }
}

const V1: &str = r#"package envoy.authz
default allow := false
allow if input.user == data.envoy.admin
test_admin_allowed if allow with input as {"user": "root"}
test_other_denied if not allow with input as {"user": "x"}
test_broken if allow with input as {"user": "x"}
"#;

#[test]
fn compiles_v1_with_data_and_evaluates() {
    let set = PolicySet::compile(
        vec![
            file("p.rego", V1),
            file("envoy/data.json", r#"{"admin": "root"}"#),
        ],
        "data.envoy.authz.allow",
    )
    .unwrap();
    let allow = set
        .eval(Value::from_json_str(r#"{"user": "root"}"#).unwrap())
        .unwrap();
    assert_eq!(allow, Value::from(true));
    let deny = set
        .eval(Value::from_json_str(r#"{"user": "eve"}"#).unwrap())
        .unwrap();
    assert_eq!(deny, Value::from(false));
    assert_eq!(set.hash.len(), 64);
}

#[test]
fn accepts_v0_policies_as_opa_envoy_users_wrote_them() {
    let v0 = "package envoy.authz\ndefault allow = false\nallow { input.method == \"GET\" }\n";
    let set = PolicySet::compile(vec![file("p.rego", v0)], "data.envoy.authz.allow").unwrap();
    let v = set
        .eval(Value::from_json_str(r#"{"method": "GET"}"#).unwrap())
        .unwrap();
    assert_eq!(v, Value::from(true));
}

#[test]
fn runs_rego_tests_and_reports_failures() {
    let files = vec![
        file("p.rego", V1),
        file("envoy/data.json", r#"{"admin": "root"}"#),
    ];
    let set = PolicySet::compile(files.clone(), "data.envoy.authz.allow").unwrap();
    let results = set.run_tests(&files);
    let passed: Vec<_> = results
        .iter()
        .filter(|r| r.passed)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        passed,
        vec![
            "data.envoy.authz.test_admin_allowed",
            "data.envoy.authz.test_other_denied"
        ]
    );
    assert!(results
        .iter()
        .any(|r| r.name.ends_with("test_broken") && !r.passed));
}

#[test]
fn refuses_syntax_errors_bad_data_and_empty_sets() {
    let e = PolicySet::compile(
        vec![file("p.rego", "package x\nallow if {")],
        "data.x.allow",
    );
    assert!(matches!(e, Err(Error::Policy { .. })));
    let e = PolicySet::compile(
        vec![file("p.rego", V1), file("data.json", "[1]")],
        "data.envoy.authz.allow",
    );
    assert!(matches!(e, Err(Error::Policy { .. })));
    let e = PolicySet::compile(vec![file("data.json", "{}")], "data.envoy.authz.allow");
    assert!(matches!(e, Err(Error::Policy { .. })));
}

#[test]
fn reads_a_directory_with_nested_data() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("envoy")).unwrap();
    std::fs::write(d.path().join("p.rego"), V1).unwrap();
    std::fs::write(d.path().join("envoy/data.yaml"), "admin: root\n").unwrap();
    std::fs::write(d.path().join("README.md"), "ignored").unwrap();
    let files = read_dir(d.path()).unwrap();
    assert_eq!(
        files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        vec!["envoy/data.yaml", "p.rego"]
    );
    let set = PolicySet::compile(files, "data.envoy.authz.allow").unwrap();
    let v = set
        .eval(Value::from_json_str(r#"{"user": "root"}"#).unwrap())
        .unwrap();
    assert_eq!(v, Value::from(true));
}

#[test]
fn refuses_oversized_files() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("big.rego"),
        vec![b'#'; MAX_FILE_LEN as usize + 1],
    )
    .unwrap();
    assert!(matches!(read_dir(d.path()), Err(Error::Policy { .. })));
}
