#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

use super::*;

const CT: &str = "multipart/form-data; boundary=XyZ";

fn body(eol: &str) -> String {
    [
        "preamble is ignored",
        "--XyZ",
        "Content-Disposition: form-data; name=\"user\"",
        "",
        "alice",
        "--XyZ",
        "content-disposition: form-data; name=\"meta\"",
        "Content-Type: application/json; charset=utf-8",
        "",
        "{\"role\": \"admin\", \"n\": [1, 2]}",
        "--XyZ",
        "Content-Disposition: form-data; name=\"user\"; filename=\"b.txt\"",
        "Content-Type: text/plain",
        "",
        "bob",
        "two lines",
        "--XyZ",
        "Content-Disposition: attachment",
        "",
        "no form name: skipped",
        "--XyZ--",
        "epilogue",
    ]
    .join(eol)
}

fn expected() -> Value {
    Value::from(json!({
        "user": ["alice", "bob\ntwo lines"],
        "meta": [{"role": "admin", "n": [1, 2]}],
    }))
}

#[test]
fn reads_fields_as_lists_and_parses_json_parts_with_crlf_line_ends() {
    let v = parse(CT, &body("\r\n")).unwrap();
    let want = Value::from(json!({
        "user": ["alice", "bob\r\ntwo lines"],
        "meta": [{"role": "admin", "n": [1, 2]}],
    }));
    assert_eq!(v, want);
}

#[test]
fn reads_bare_lf_line_ends() {
    assert_eq!(parse(CT, &body("\n")).unwrap(), expected());
}

#[test]
fn takes_a_quoted_boundary_in_any_case_from_the_content_type() {
    let ct = "Multipart/Form-Data; charset=utf-8; BOUNDARY=\"XyZ\"";
    assert_eq!(parse(ct, &body("\n")).unwrap(), expected());
    assert_eq!(boundary(ct).unwrap(), "XyZ");
}

#[test]
fn a_missing_or_oversized_boundary_is_an_error() {
    for ct in [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=\"\"",
    ] {
        assert!(parse(ct, &body("\n")).is_err(), "{ct}");
    }
    let long = format!("multipart/form-data; boundary={}", "b".repeat(71));
    assert!(parse(&long, &body("\n")).is_err());
}

#[test]
fn malformed_bodies_are_errors() {
    let cases = [
        "no delimiter at all".to_owned(),
        "--XyZ\nContent-Disposition: form-data; name=\"a\"\n\nunclosed".to_owned(),
        "--XyZ\nContent-Disposition: form-data; name=\"a\"".to_owned(),
        "--XyZ\nno colon here\n\nx\n--XyZ--".to_owned(),
        "--XyZ trailing\nContent-Disposition: form-data; name=\"a\"\n\nx\n--XyZ--".to_owned(),
        "--XyZ\nContent-Type: application/json\nContent-Disposition: form-data; name=\"j\"\n\n{not json\n--XyZ--"
            .to_owned(),
        "--XyZ".to_owned(),
    ];
    for b in &cases {
        assert!(parse(CT, b).is_err(), "{b:?}");
    }
}

#[test]
fn an_empty_form_and_an_empty_value_are_read() {
    assert_eq!(parse(CT, "--XyZ--\r\n").unwrap(), Value::from(json!({})));
    let b = "--XyZ\r\nContent-Disposition: form-data; name=\"e\"\r\n\r\n\r\n--XyZ--";
    assert_eq!(parse(CT, b).unwrap(), Value::from(json!({"e": [""]})));
}

#[test]
fn hostile_bodies_hit_the_bounds() {
    let one = "--XyZ\nContent-Disposition: form-data; name=\"a\"\n\nx\n";
    let many = format!("{}--XyZ--", one.repeat(MAX_PARTS + 1));
    assert!(parse(CT, &many).unwrap_err().to_string().contains("parts"));
    let at_limit = format!("{}--XyZ--", one.repeat(MAX_PARTS));
    assert!(parse(CT, &at_limit).is_ok());
    let fat = format!(
        "--XyZ\nX-Pad: {}\nContent-Disposition: form-data; name=\"a\"\n\nx\n--XyZ--",
        "p".repeat(MAX_PART_HEADERS)
    );
    assert!(parse(CT, &fat).is_err());
    let deep = format!(
        "--XyZ\nContent-Type: application/json\nContent-Disposition: form-data; name=\"j\"\n\n{}\n--XyZ--",
        "[".repeat(10_000)
    );
    assert!(parse(CT, &deep).is_err());
    // Boundary-like text inside a value that is not at a line start stays in the value.
    let inside = "--XyZ\nContent-Disposition: form-data; name=\"a\"\n\nx --XyZ y\n--XyZ--";
    assert_eq!(
        parse(CT, inside).unwrap(),
        Value::from(json!({"a": ["x --XyZ y"]}))
    );
    for junk in [
        "\u{0}\u{0}",
        "--XyZ\n\u{feff}:\n\n--XyZ--",
        "--XyZ\r\r\r\n",
        "é--XyZ",
    ] {
        let _ = parse(CT, junk);
    }
}

#[test]
fn parsed_body_routes_multipart_by_content_type() {
    let b = body("\r\n");
    let (v, truncated) = crate::parsed::parsed_body(Some(CT), None, false, &b).unwrap();
    assert!(!truncated);
    assert_eq!(v["meta"][0]["role"], Value::from("admin"));
    let short = Some("999999");
    let (v, truncated) = crate::parsed::parsed_body(Some(CT), short, false, &b).unwrap();
    assert!(truncated);
    assert_eq!(v, Value::Null);
}
