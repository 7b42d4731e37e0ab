use super::*;
use serde_json::json;

fn no_redact(s: &str) -> String {
    format!("R({})", s.len())
}

#[test]
fn canonical_json_sorts_keys_at_every_depth() {
    let mut out = String::new();
    let v = json!({"b": 1, "a": {"d": [1, {"z": null, "y": "x"}], "c": true}});
    assert!(canonical_json(&v, &mut out, 0, 1000));
    assert_eq!(out, r#"{"a":{"c":true,"d":[1,{"y":"x","z":null}]},"b":1}"#);
}

#[test]
fn canonical_json_writes_strings_and_numbers_as_serde_json_does() {
    // Stored details must not depend on which path wrote a string: escaped or copied.
    let strings = [
        "plain",
        "quote \" and \\ backslash",
        "\u{0}\u{1}\u{8}\u{c}\n\r\t\u{1f}",
        "\u{7f} DEL, é, 日本, 🦀",
        "",
    ];
    for s in strings {
        for v in [
            json!({ s: s }),
            json!([s, 1, -2, 1.5, u64::MAX, i64::MIN, 1e300, true, null]),
        ] {
            let mut out = String::new();
            assert!(canonical_json(&v, &mut out, 0, 1000));
            assert_eq!(out, serde_json::to_string(&v).unwrap(), "{s:?}");
        }
    }
}

#[test]
fn refuses_kinds_that_are_not_dotted_lowercase() {
    for bad in [
        "",
        "Svid.Issued",
        "svid issued",
        "svid/issued",
        &"a".repeat(65),
    ] {
        let e = Event::new(bad, Outcome::Success);
        assert!(
            matches!(prepare(e, &no_redact), Err(Error::InvalidEvent(_))),
            "{bad:?}"
        );
    }
    assert!(prepare(Event::new(kind::SVID_ISSUED, Outcome::Success), &no_redact).is_ok());
}

#[test]
fn huge_details_are_replaced_by_their_size_and_hash() {
    let mut e = Event::new(kind::AUTHZ_DECISION, Outcome::Deny);
    e.details = json!({"body": "x".repeat(100_000)}).into();
    let p = prepare(e, &no_redact).unwrap();
    assert!(p.details.len() < 200, "{}", p.details);
    let v: Value = serde_json::from_str(&p.details).unwrap();
    assert_eq!(v["_omitted"], true);
    assert!(v["_bytes"].as_u64().unwrap() > 100_000);
}

#[test]
fn deeply_nested_details_are_bounded() {
    let mut v = json!(1);
    for _ in 0..1_000 {
        v = json!([v]);
    }
    let mut e = Event::new(kind::AUTHZ_DECISION, Outcome::Deny);
    e.details = v.into();
    let p = prepare(e, &no_redact).unwrap();
    assert!(p.details.contains("nested too deep"), "{}", p.details);
}

#[test]
fn long_fields_are_cut_at_a_char_boundary() {
    let mut e = Event::new(kind::SVID_ISSUED, Outcome::Success);
    e.subject = "é".repeat(2000);
    let p = prepare(e, &no_redact).unwrap();
    assert!(p.subject.len() <= MAX_FIELD_LEN);
    assert!(p.subject.ends_with("..."));
}

#[test]
fn sensitive_detail_values_are_never_stored_in_clear() {
    let mut e = Event::new(kind::AUTHZ_DECISION, Outcome::Allow);
    e.details =
        json!({"headers": {"Authorization": "Bearer abc", "x-ok": "fine"}, "token": 42}).into();
    let p = prepare(e, &no_redact).unwrap();
    assert!(!p.details.contains("Bearer abc"), "{}", p.details);
    assert!(p.details.contains("R(10)"));
    assert!(p.details.contains("R(2)"));
    assert!(p.details.contains("fine"));
}

#[test]
fn outcome_names_round_trip() {
    for o in [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Allow,
        Outcome::Deny,
    ] {
        assert_eq!(Outcome::parse(o.as_str()), Some(o));
    }
    assert_eq!(Outcome::parse("maybe"), None);
}
