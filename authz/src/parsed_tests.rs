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

/// A policy that never reads `parsed_body` gets its body only checked: the check must refuse
/// exactly the bodies the parser refuses, or such a policy would decide requests a policy
/// reading the body could never see.
#[test]
fn the_body_check_refuses_exactly_what_the_parser_refuses() {
    let deep = format!(
        "{}{}",
        "[".repeat(MAX_JSON_DEPTH + 1),
        "]".repeat(MAX_JSON_DEPTH + 1)
    );
    let just = format!(
        "{}{}",
        "[".repeat(MAX_JSON_DEPTH),
        "]".repeat(MAX_JSON_DEPTH)
    );
    let mp = "multipart/form-data; boundary=b";
    let cases: Vec<(Option<&str>, Option<&str>, bool, String)> = vec![
        (
            Some("application/json"),
            None,
            false,
            r#"{"a": [1, 2.5e3, "x\u00e9"], "b": null}"#.into(),
        ),
        (Some("application/json"), None, false, r#"{"a": 1,}"#.into()),
        (
            Some("application/json"),
            None,
            false,
            r#"{"a": "\q"}"#.into(),
        ),
        (Some("application/json"), None, false, "{} {}".into()),
        (Some("application/json"), None, false, "1e999999".into()),
        (
            Some("application/json"),
            None,
            false,
            r#"{"a":1,"a":2}"#.into(),
        ),
        (Some("application/json"), None, false, deep),
        (Some("application/json"), None, false, just),
        (Some("application/json"), Some("999"), false, "{".into()),
        (Some("application/json"), None, true, "{".into()),
        (
            Some("application/x-www-form-urlencoded"),
            None,
            false,
            "a=%zz".into(),
        ),
        (
            Some(mp),
            None,
            false,
            "--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n".into(),
        ),
        (Some(mp), None, false, "no boundary here".into()),
        (Some("text/plain"), None, false, "{".into()),
    ];
    for (ct, cl, partial, body) in cases {
        let parsed = parsed_body(ct, cl, partial, &body)
            .map(drop)
            .map_err(|e| e.to_string());
        let checked = check_body(ct, cl, partial, &body).map_err(|e| e.to_string());
        assert_eq!(
            parsed.is_ok(),
            checked.is_ok(),
            "{ct:?} {body:.40}: {parsed:?} vs {checked:?}"
        );
    }
}
