#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

fn reads(paths: &[&str]) -> InputReads {
    InputReads::of_paths(paths)
}

fn json(text: &str) -> Value {
    Value::from_json_str(text).unwrap()
}

#[test]
fn inputs_that_differ_only_in_unread_parts_share_a_key() {
    let m = DecisionMemo::new(&reads(&["source.id", "http.path"]), 16).unwrap();
    let a = json(
        r#"{"source": {"id": "w"}, "http": {"path": "/a", "headers": {"x-request-id": "1"}}}"#,
    );
    let b = json(
        r#"{"source": {"id": "w"}, "http": {"path": "/a", "headers": {"x-request-id": "2"}}}"#,
    );
    let c = json(r#"{"source": {"id": "w"}, "http": {"path": "/b"}}"#);
    assert_eq!(m.key(&a), m.key(&b));
    assert_ne!(m.key(&a), m.key(&c));
}

#[test]
fn absent_null_empty_and_mistyped_values_get_different_keys() {
    let m = DecisionMemo::new(&reads(&["a"]), 16).unwrap();
    let keys: Vec<_> = [
        "{}",
        r#"{"a": null}"#,
        r#"{"a": ""}"#,
        r#"{"a": "1"}"#,
        r#"{"a": 1}"#,
        r#"{"a": true}"#,
        r#"{"a": []}"#,
        r#"{"a": {}}"#,
        r#"{"a": ["1"]}"#,
        r#"{"a": {"1": "1"}}"#,
    ]
    .iter()
    .map(|t| m.key(&json(t)).unwrap())
    .collect();
    for (i, k) in keys.iter().enumerate() {
        for (j, l) in keys.iter().enumerate() {
            assert!(i == j || k != l, "{i} and {j} share a key");
        }
    }
}

#[test]
fn string_boundaries_cannot_be_shifted_between_paths() {
    let m = DecisionMemo::new(&reads(&["a", "b"]), 16).unwrap();
    let one = json(r#"{"a": "xy", "b": "z"}"#);
    let two = json(r#"{"a": "x", "b": "yz"}"#);
    assert_ne!(m.key(&one), m.key(&two));
}

#[test]
fn a_path_through_a_non_object_is_absent() {
    let m = DecisionMemo::new(&reads(&["a.b"]), 16).unwrap();
    assert_eq!(m.key(&json(r#"{"a": "s"}"#)), m.key(&json("{}")));
}

#[test]
fn oversized_keys_are_not_memoized() {
    let m = DecisionMemo::new(&reads(&["a"]), 16).unwrap();
    let long = format!(r#"{{"a": "{}"}}"#, "x".repeat(MAX_KEY + 1));
    assert!(m.key(&json(&long)).is_none());
    let many = format!(r#"{{"a": [{}]}}"#, vec!["1"; MAX_KEY].join(","));
    assert!(m.key(&json(&many)).is_none());
}

#[test]
fn nondeterministic_whole_input_or_zero_capacity_sets_get_no_memo() {
    let mut r = reads(&["a"]);
    r.deterministic = false;
    assert!(DecisionMemo::new(&r, 16).is_none());
    let whole = InputReads {
        paths: vec![Vec::new()],
        deterministic: true,
    };
    assert!(DecisionMemo::new(&whole, 16).is_none());
    assert!(DecisionMemo::new(&reads(&["a"]), 0).is_none());
}

#[test]
fn holds_at_most_its_capacity_and_keeps_what_is_used() {
    let m = DecisionMemo::new(&reads(&["a"]), 8).unwrap();
    let key = |i: usize| m.key(&json(&format!(r#"{{"a": {i}}}"#))).unwrap();
    m.put(key(0), Value::from(0));
    for i in 1..100 {
        m.put(key(i), Value::from(i as u64));
        // Entry 0 is used all the time, so it survives every turnover.
        assert_eq!(m.get(&key(0)), Some(Value::from(0)), "after {i}");
        assert!(m.len() <= 8, "{} entries", m.len());
    }
    assert_eq!(m.get(&key(1)), None);
    assert_eq!(m.get(&key(99)), Some(Value::from(99u64)));
}
