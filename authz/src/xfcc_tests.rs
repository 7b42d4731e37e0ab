#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn a_uri_inside_a_quoted_subject_is_not_the_caller() {
    // The attack: a certificate whose subject carries ";URI=spiffe://td/admin". Envoy
    // quotes the subject; a parser that splits on ';' first reads admin.
    let h = r#"By=spiffe://td/envoy;Hash=0a1b;Subject="CN=x;URI=spiffe://td/admin";URI=spiffe://td/web"#;
    assert_eq!(caller_uri(h).as_deref(), Some("spiffe://td/web"));
    let e = parse(h).unwrap();
    assert_eq!(e.len(), 1);
    assert!(e[0].contains(&(XfccKey::Subject, "CN=x;URI=spiffe://td/admin".into())));
}

#[test]
fn a_quoted_comma_does_not_start_an_element() {
    let h = r#"Subject="CN=x,URI=spiffe://td/admin";URI=spiffe://td/web"#;
    assert_eq!(parse(h).unwrap().len(), 1);
    assert_eq!(caller_uri(h).as_deref(), Some("spiffe://td/web"));
    // Escaped quotes and backslashes stay inside the value.
    let h = r#"Subject="CN=a\"b\\,URI=spiffe://td/admin\";x";URI=spiffe://td/web"#;
    let e = parse(h).unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0][0].1, r#"CN=a"b\,URI=spiffe://td/admin";x"#);
    assert_eq!(caller_uri(h).as_deref(), Some("spiffe://td/web"));
}

#[test]
fn the_last_element_names_the_caller() {
    // A client talking to an APPEND_FORWARD edge sent the first element itself; the
    // edge appended the last one.
    let h = "URI=spiffe://td/admin,By=spiffe://td/edge;Hash=ab;URI=spiffe://td/web";
    assert_eq!(parse(h).unwrap().len(), 2);
    assert_eq!(caller_uri(h).as_deref(), Some("spiffe://td/web"));
    let h = "By=spiffe://td/edge;URI=spiffe://td/web , URI=spiffe://td/api";
    assert_eq!(caller_uri(h).as_deref(), Some("spiffe://td/api"));
}

#[test]
fn a_malformed_header_names_nobody() {
    for h in [
        r#"By=spiffe://td/envoy;Subject="CN=x;URI=spiffe://td/admin"#, // unterminated quote
        r#"URI=spiffe://td/web;Subject="CN=x\"#,                       // ends in an escape
        "URI=spiffe://td/web;Evil=1",                                  // unknown key
        "URI=spiffe://td/web;",                                        // empty pair
        "URI=spiffe://td/web,",                                        // empty element
        "URI=spiffe://td/web;;URI=x",
        "URI",
        "=spiffe://td/web",
        r#"URI=spiffe://td/"web""#, // quote in a bare value
        r#"Subject="CN=x"junk;URI=spiffe://td/web"#, // text after a closing quote
        "Hash=a;Hash=b;URI=spiffe://td/web", // Hash twice
    ] {
        assert!(parse(h).is_err(), "{h}");
        assert_eq!(caller_uri(h), None, "{h}");
    }
}

#[test]
fn an_element_without_exactly_one_uri_names_nobody() {
    assert_eq!(caller_uri(""), None);
    assert_eq!(caller_uri("By=spiffe://td/edge;Hash=ab"), None);
    assert_eq!(caller_uri("By=spiffe://td/edge;URI="), None);
    assert_eq!(caller_uri("URI=spiffe://td/a;URI=spiffe://td/b"), None);
    // The earlier element's URI is not borrowed when the last has none.
    assert_eq!(
        caller_uri("URI=spiffe://td/admin,By=spiffe://td/edge"),
        None
    );
}

#[test]
fn reads_what_envoy_writes() {
    let h = concat!(
        "By=spiffe://td/edge;Hash=9ba61d6425303443c0748a02dd8de688468ed33be74eee6556d90c0149c1309e;",
        r#"Cert="-----BEGIN%20CERTIFICATE-----%0AMIIB%0A-----END%20CERTIFICATE-----%0A";"#,
        r#"Subject="O=esm,CN=web";URI=spiffe://td/ns/prod/sa/web;DNS=web.local;DNS=web"#
    );
    let e = parse(h).unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].len(), 7);
    assert_eq!(e[0][3], (XfccKey::Subject, "O=esm,CN=web".into()));
    assert_eq!(caller_uri(h).as_deref(), Some("spiffe://td/ns/prod/sa/web"));
    // Keys without case, as Envoy's documentation allows.
    assert_eq!(
        caller_uri("by=spiffe://td/edge;uri=spiffe://td/web").as_deref(),
        Some("spiffe://td/web")
    );
}
