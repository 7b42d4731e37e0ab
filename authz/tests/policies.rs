//! Every policy set shipped in policies/ compiles and passes its own Rego tests, and the
//! test runner really fails a set whose tests fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use esm_authz::policy_set::{read_dir, PolicySet};
use esm_authz::reload::validate;
use esm_authz::source::{PolicySource, SetSpec};

const RULE: &str = "data.envoy.authz.allow";

fn sets() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut v = vec![root.join("default")];
    for e in std::fs::read_dir(root.join("examples")).unwrap() {
        v.push(e.unwrap().path());
    }
    v
}

#[test]
fn shipped_policy_sets_pass_their_rego_tests() {
    for dir in sets() {
        let files = read_dir(&dir).unwrap();
        let set = PolicySet::compile(files.clone(), RULE).unwrap();
        let results = set.run_tests(&files);
        assert!(
            results.len() >= 4,
            "{}: only {} tests",
            dir.display(),
            results.len()
        );
        for r in &results {
            assert!(
                r.passed,
                "{}: {} failed: {:?}",
                dir.display(),
                r.name,
                r.error
            );
        }
    }
}

#[test]
fn a_set_whose_tests_fail_is_refused() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.rego"),
        "package envoy.authz\nimport rego.v1\ndefault allow := false\ntest_wrong if allow\n",
    )
    .unwrap();
    let e = validate(&SetSpec::new(
        "default",
        PolicySource::Dir(d.path().into()),
        RULE,
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("test_wrong"), "{e}");
}
