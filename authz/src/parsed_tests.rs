#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

fn json(v: &Value) -> serde_json::Value {
    serde_json::from_str(&v.to_json_str().unwrap()).unwrap()
}

#[test]
fn parsed_path_trims_leading_slashes_and_decodes() {
    assert_eq!(
        json(&parsed_path("/a/b%20c?x=1").unwrap()),
        serde_json::json!(["a", "b c"])
    );
    assert_eq!(json(&parsed_path("/").unwrap()), serde_json::json!([""]));
    assert_eq!(
        json(&parsed_path("//x/").unwrap()),
        serde_json::json!(["x", ""])
    );
}

#[test]
fn parsed_query_groups_repeated_keys() {
    let q = parsed_query("/p?a=1&a=2&b&c=x+y%21").unwrap();
    assert_eq!(
        json(&q),
        serde_json::json!({"a": ["1", "2"], "b": [""], "c": ["x y!"]})
    );
    assert_eq!(json(&parsed_query("/p").unwrap()), serde_json::json!({}));
}

#[test]
fn rejects_invalid_escapes_and_non_utf8() {
    assert!(parsed_path("/a%zz").is_err());
    assert!(parsed_path("/a%ff").is_err());
    assert!(parsed_query("/p?a=%").is_err());
}

#[test]
fn parses_json_and_form_bodies() {
    let (v, t) = parsed_body(Some("application/json"), None, false, r#"{"a":[1,2]}"#).unwrap();
    assert_eq!(json(&v), serde_json::json!({"a": [1, 2]}));
    assert!(!t);
    let (v, _) = parsed_body(
        Some("application/x-www-form-urlencoded"),
        None,
        false,
        "name=a&name=b",
    )
    .unwrap();
    assert_eq!(json(&v), serde_json::json!({"name": ["a", "b"]}));
    let (v, _) = parsed_body(Some("text/plain"), None, false, "hello").unwrap();
    assert_eq!(v, Value::Null);
}

#[test]
fn short_or_partial_body_is_truncated_not_parsed() {
    let (v, t) = parsed_body(Some("application/json"), Some("100"), false, "{}").unwrap();
    assert!(t && v == Value::Null);
    let (v, t) = parsed_body(Some("application/json"), None, true, "{}").unwrap();
    assert!(t && v == Value::Null);
}

#[test]
fn refuses_deeply_nested_and_malformed_json() {
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    assert!(parsed_body(Some("application/json"), None, false, &deep).is_err());
    assert!(parsed_body(Some("application/json"), None, false, "{\"a\":").is_err());
    // Brackets inside strings do not count.
    let s = format!("{{\"a\":\"{}\"}}", "[".repeat(1000));
    assert!(parsed_body(Some("application/json"), None, false, &s).is_ok());
}

#[test]
fn oversized_body_is_not_parsed() {
    let big = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_PARSED_BODY));
    let (v, t) = parsed_body(Some("application/json"), None, false, &big).unwrap();
    assert!(t && v == Value::Null);
}

proptest::proptest! {
    #[test]
    fn path_and_query_parsing_never_panic(s in ".{0,200}") {
        let _ = parsed_path(&s);
        let _ = parsed_query(&s);
        let _ = parsed_body(Some("application/json"), None, false, &s);
    }
}
