#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::Value as Json;

use super::*;

fn canon(text: &str) -> String {
    canonical(text.as_bytes()).unwrap()
}

#[test]
fn sorts_keys_drops_whitespace_and_writes_strings_like_go() {
    assert_eq!(
        canon(" {\"b\" : [1, {\"d\": null, \"c\": true}],\n \"a\": \"<&>\\u00e9\\u2028\\u0001\\b\\/\"} "),
        "{\"a\":\"<&>é\\u2028\\u0001\\b/\",\"b\":[1,{\"c\":true,\"d\":null}]}"
    );
    assert_eq!(canon("[]"), "[]");
    assert_eq!(canon("{ }"), "{}");
    assert_eq!(canon("\"x\""), "\"x\"");
}

#[test]
fn keeps_numbers_as_written() {
    for n in [
        "1",
        "1.0",
        "1.00",
        "1e2",
        "1E+2",
        "100.0",
        "-0",
        "0.1",
        "123456789012345678901234567890",
        "123456789012345678901234567000",
        "1e400",
    ] {
        assert_eq!(canon(&format!("{{\"n\": {n}}}")), format!("{{\"n\":{n}}}"));
    }
}

#[test]
fn refuses_what_is_not_one_json_document() {
    for bad in [
        "",
        "{",
        "{\"a\" 1}",
        "{\"a\": 1,}",
        "[1,]",
        "[1 2]",
        "01",
        "1.",
        ".5",
        "+1",
        "-",
        "1e",
        "tru",
        "nul",
        "{\"a\": 1} x",
        "\"unterminated",
        "\"raw \u{1} control\"",
        "\"\\ud800\"",
        "\"\\x\"",
        "{1: 2}",
        "NaN",
    ] {
        assert!(canonical(bad.as_bytes()).is_err(), "{bad:?}");
    }
    assert!(canonical(b"\"\xff\"").is_err());
    let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 2), "]".repeat(MAX_DEPTH + 2));
    assert!(canonical(deep.as_bytes()).is_err());
}

#[test]
fn refuses_a_key_twice_in_one_object() {
    let e = canonical(br#"{"allow": false, "allow": true}"#).unwrap_err();
    assert!(e.contains("twice"), "{e}");
    // The same key written two ways is the same key.
    assert!(canonical(br#"{"a": 1, "\u0061": 2}"#).is_err());
    assert!(canonical(br#"[{"a": 1}, {"a": 2}]"#).is_ok());
}

fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<String>().prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Whatever the layout, the canonical form is one text, and it reads back as the value.
    #[test]
    fn canonical_form_is_layout_free_and_keeps_the_value(v in json_value()) {
        let compact = canonical(serde_json::to_string(&v).unwrap().as_bytes()).unwrap();
        let pretty = canonical(serde_json::to_string_pretty(&v).unwrap().as_bytes()).unwrap();
        prop_assert_eq!(&compact, &pretty);
        prop_assert_eq!(serde_json::from_str::<Json>(&compact).unwrap(), v);
    }
}
