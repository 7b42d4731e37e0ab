//! The bytecode VM and the interpreter decide alike: every shipped policy set, the
//! OPA-Envoy-style example policies and policies using the rest of the language are
//! evaluated both ways on thousands of generated requests and on proptest-generated inputs,
//! and must give the same value, or both an error. Where the VM alone would differ, the set
//! must be one [`crate::bytecode_check`] keeps on the interpreter, or the difference one the
//! interpreter re-evaluation covers (an undefined answer or an error).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use proptest::prelude::*;
use regorus::Value;

use super::Kind;
use crate::input::{build, InputOptions};
use crate::memo_agrees_tests::{requests, OPA_ENVOY_STYLE};
use crate::policy_set::{read_dir, PolicySet, SourceFile};

const RULE: &str = "data.envoy.authz.allow";

/// A set as served (on the engine the check chose), the same on the interpreter, and its
/// rule on the VM whatever the check said.
struct Both {
    served: PolicySet,
    interpreter: PolicySet,
    raw: super::Bytecode,
}

fn both(files: &[SourceFile], engine: Kind) -> Both {
    let served = PolicySet::compile(files.to_vec(), RULE)
        .unwrap()
        .with_memo_capacity(0);
    assert_eq!(
        served.engine_kind(),
        engine,
        "{:?}: {:?}",
        files[0].text,
        served.interpreted_because()
    );
    let interpreter = PolicySet::compile(files.to_vec(), RULE)
        .unwrap()
        .with_memo_capacity(0)
        .interpreted();
    let raw = served.bytecode_unchecked().unwrap();
    Both {
        served,
        interpreter,
        raw,
    }
}

/// Evaluates `input` both ways; the (equal) result.
fn agree(name: &str, b: &Both, input: Value) -> Option<Value> {
    let got = b.served.evaluate(input.clone());
    let want = b.interpreter.evaluate(input.clone());
    match (&got, &want) {
        (Ok(a), Ok(w)) => assert_eq!(a, w, "{name}: input {input}"),
        (Err(_), Err(_)) => {}
        _ => panic!("{name}: input {input}: served {got:?}, interpreter {want:?}"),
    }
    if b.served.engine_kind() == Kind::Bytecode {
        // The VM alone differs only where the interpreter is asked again.
        let raw = b.raw.run(&input);
        let differs = !matches!((&raw, &want), (Ok(r), Ok(w)) if r == w);
        let rechecked = matches!(raw, Ok(Value::Undefined) | Err(_));
        assert!(
            !differs || rechecked,
            "{name}: input {input}: VM {raw:?}, interpreter {want:?}"
        );
    }
    got.ok()
}

fn decide_requests(name: &str, files: &[SourceFile], n: usize, engine: Kind) {
    let b = both(files, engine);
    let (mut allowed, mut decided) = (0, 0);
    let yes = Value::from(true);
    for req in requests(files, n) {
        let Ok(input) = build(&req, &InputOptions::default()) else {
            continue;
        };
        if let Some(v) = agree(name, &b, input) {
            decided += 1;
            allowed += usize::from(v == yes || v["allowed"] == yes);
        }
    }
    // Both outcomes must come up, or agreeing proves little.
    assert!(
        allowed > 0 && allowed < decided,
        "{name}: {allowed} of {decided} allowed"
    );
}

#[test]
fn shipped_policy_sets_decide_alike_on_both_engines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    for (dir, engine) in [
        ("default", Kind::Bytecode),
        ("examples/rbac", Kind::Bytecode),
        ("examples/network", Kind::Bytecode),
        // `tier` has two bodies the compiler cannot show agree.
        ("examples/rate_tiers", Kind::Interpreter),
    ] {
        decide_requests(dir, &read_dir(&root.join(dir)).unwrap(), 2000, engine);
    }
    // esm's token builtins are interpreter extensions: such a set stays there.
    let jwt = PolicySet::compile(read_dir(&root.join("examples/jwt")).unwrap(), RULE).unwrap();
    assert_eq!(jwt.engine_kind(), Kind::Interpreter);
}

fn rego(text: &str) -> Vec<SourceFile> {
    vec![
        SourceFile {
            path: "p.rego".into(),
            text: text.into(),
        },
        SourceFile {
            path: "ids.rego".into(),
            text: "package ids\nweb := \"spiffe://example.org/ns/prod/sa/web\"\n".into(),
        },
    ]
}

#[test]
fn opa_envoy_style_policies_decide_alike_on_both_engines() {
    // The second uses `else`: the interpreter's.
    let engines = [Kind::Bytecode, Kind::Interpreter, Kind::Bytecode];
    for (i, (p, engine)) in OPA_ENVOY_STYLE.iter().zip(engines).enumerate() {
        decide_requests(&format!("policy {i}"), &rego(p), 2000, engine);
    }
}

/// Policies over generic inputs, with the engine each is served on: comparisons across
/// types, arithmetic, builtins that fail on the wrong type or value, conflicting values,
/// partial sets and objects, comprehensions, `every`, `else`, functions, defaults, negation
/// and undefined results.
const GENERIC: &[(&str, Kind)] = &[
    ("allow := input.a < input.b", Kind::Bytecode),
    (
        "default allow := false\nallow if input.a == input.b\nallow if count(input.c) > 2",
        Kind::Bytecode,
    ),
    (
        r#"allow := {"allowed": startswith(input.s, "x"), "n": input.n + 1}"#,
        Kind::Interpreter,
    ),
    (
        "allow := sum([x | some x in input.c; is_number(x)]) / count(input.c)",
        Kind::Interpreter,
    ),
    (
        r#"tags contains t if { some t in input.c; is_string(t) }
allow := {"tags": tags, "upper": [upper(t) | some t in tags]}"#,
        Kind::Interpreter,
    ),
    (
        r#"tags contains t if { some t in data.lists[input.s]; is_string(t) }
allow := {"tags": tags, "upper": [upper(t) | some t in tags]}"#,
        Kind::Interpreter,
    ),
    (
        r#"tags contains t if {
    some k in ["x", "1", "zz"]
    k == input.s
    some t in data.lists[k]
    is_string(t)
}
allow := {"tags": tags, "upper": [upper(t) | some t in tags]}"#,
        Kind::Bytecode,
    ),
    (
        "by_key[k] := v if { some k, v in data.m }\nallow := object.keys(by_key)",
        Kind::Interpreter,
    ),
    (
        "allow := 1 if input.a\nallow := 2 if input.b",
        Kind::Bytecode,
    ),
    (
        r#"level(x) := "num" if is_number(x)
level(x) := "str" if is_string(x)
allow := r if { r := level(input.a) } else := "other""#,
        Kind::Interpreter,
    ),
    (
        r#"default allow := false
allow if {
    every k, v in input.o { is_string(k); v != null }
    to_number(input.s) > 0
}"#,
        Kind::Bytecode,
    ),
    (
        r#"allow := concat(",", sort([sprintf("%v=%v", [k, v]) | some k, v in input.o]))"#,
        Kind::Interpreter,
    ),
    (
        r#"allow := concat(",", sort([sprintf("%v=%v", [k, v]) | some k, v in data.m]))"#,
        Kind::Bytecode,
    ),
    (
        "allow if input.c[0] == input.c[count(input.c) - 1]",
        Kind::Interpreter,
    ),
    (
        r#"allow := {"ok": x} if { some x in data.lists.a; x == input.s }"#,
        Kind::Interpreter,
    ),
    (
        "allow if { some x in data.lists.a; x == input.a }",
        Kind::Bytecode,
    ),
    (
        "allow if { some x in input.c; x == input.a }",
        Kind::Interpreter,
    ),
    (
        r#"allow if { some x in data.bad[input.s]; x == input.a }"#,
        Kind::Interpreter,
    ),
    (
        r#"allow if { some x in ["x", "1"]; startswith(input.s, x) }"#,
        Kind::Bytecode,
    ),
    (
        r#"f(x) := 1 if x == "x"
f(x) := 2 if x == "xy"
allow := f(input.s)"#,
        Kind::Interpreter,
    ),
    (
        r#"g(x) := true if startswith(x, "x")
g(x) := true if x == "1"
allow := {v | some v in data.lists[input.s]; g(v)}"#,
        Kind::Interpreter,
    ),
    (
        r#"g(x) := true if startswith(x, "x")
g(x) := true if x == "1"
allow := {v | some k in ["x", "xy"]; startswith(k, input.s); some v in data.lists[k]; g(v)}"#,
        Kind::Bytecode,
    ),
    (
        r#"h(xs, y) if { some x in xs; x == y }
allow := [h(data.lists.a, input.s), h(data.lists.x, input.a)]"#,
        Kind::Bytecode,
    ),
    (
        r#"h(xs, y) if { some x in xs; x == y }
allow := h(input.c, input.s)"#,
        Kind::Interpreter,
    ),
    (
        r#"allow := {input.s: 1, "k": input.a, "c": [k | some k, _ in data.m]}"#,
        Kind::Bytecode,
    ),
    (
        "allow if not input.a\nallow if input.b == false\nallow if not startswith(input.s, \"x\")",
        Kind::Bytecode,
    ),
    ("allow := input.a | input.b", Kind::Interpreter),
    (
        r#"allow := {"n": count(input.c), "in": input.a in input.c, "s": json.marshal(input.o), "ne": input.a != input.b}"#,
        Kind::Bytecode,
    ),
    ("allow := {k: v | some k, v in data.m}", Kind::Interpreter),
];

/// What the generic policies' loops go over: lists keyed like the generated strings, an
/// object, and a map whose values are not all lists.
const GENERIC_DATA: &str = r#"{
    "lists": {"x": ["x", "xy", 1], "xy": [], "1": [true, null, "1"], "a": ["x", "1"]},
    "m": {"x": 1, "y": "two", "z": [3]},
    "bad": {"x": ["x"], "xy": "xy"}
}"#;

fn generic(text: &str) -> Vec<SourceFile> {
    let mut files = rego(&format!("package envoy.authz\nimport rego.v1\n{text}\n"));
    files.push(SourceFile {
        path: "data.json".into(),
        text: GENERIC_DATA.into(),
    });
    files
}

static GENERIC_SETS: std::sync::LazyLock<Vec<Both>> = std::sync::LazyLock::new(|| {
    GENERIC
        .iter()
        .map(|(text, engine)| both(&generic(text), *engine))
        .collect()
});

fn json() -> impl Strategy<Value = serde_json::Value> {
    let key = prop::sample::select(vec!["a", "b", "c", "o", "s", "n", "x"]);
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        (-3i64..4).prop_map(serde_json::Value::from),
        prop::sample::select(vec![0.5f64, -1.25, 1e3]).prop_map(serde_json::Value::from),
        prop::sample::select(vec!["", "x", "xy", "1", "2.5", "-3", "a,b"])
            .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..4).prop_map(|m| {
                serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

fn input() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec!["a", "b", "c", "o", "s", "n"]);
    prop::collection::btree_map(key, json(), 0..6).prop_map(|m| {
        let obj: serde_json::Map<String, serde_json::Value> =
            m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        Value::from(serde_json::Value::Object(obj))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_inputs_evaluate_alike_on_both_engines(inputs in prop::collection::vec(input(), 8)) {
        for (i, b) in GENERIC_SETS.iter().enumerate() {
            for input in &inputs {
                agree(&format!("generic policy {i}"), b, input.clone());
            }
        }
    }
}
