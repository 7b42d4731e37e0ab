//! The parts OPA-Envoy adds to the input beside the CheckRequest itself: `parsed_path`,
//! `parsed_query`, `parsed_body` and `truncated_body`. Pure functions over strings, bounded.

use std::collections::BTreeMap;

use regorus::Value;

use crate::error::{Error, Result};

/// Bodies larger than this are not parsed: the policy sees `truncated_body: true` and no
/// `parsed_body`, and a policy that needs the body cannot allow on it.
pub const MAX_PARSED_BODY: usize = 1 << 20;

/// Nesting deeper than this in a JSON body is refused (the request is denied).
pub const MAX_JSON_DEPTH: usize = 64;

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `s` (and `+` as space when `plus` is set). Invalid escapes are an error,
/// as Go's `url.Parse` makes them; the bytes must decode to UTF-8.
pub fn percent_decode(s: &str, plus: bool) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(hex_val);
                let lo = b.get(i + 2).copied().and_then(hex_val);
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(Error::Request(format!("invalid escape in {s:?}"))),
                }
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| Error::Request(format!("{s:?} does not decode to UTF-8")))
}

/// The path of a request path: before its query and fragment.
pub fn path_part(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or_default()
}

/// The query of a request path: after `?`, before the fragment.
pub fn query_part(path: &str) -> &str {
    path.split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or_default())
        .unwrap_or_default()
}

/// `/a/b%20c?x=1` → `["a", "b c"]`; `/` → `[""]` (leading slashes trimmed, then split).
pub fn parsed_path(path: &str) -> Result<Value> {
    let decoded = percent_decode(path_part(path), false)?;
    let segments: Vec<Value> = decoded
        .trim_start_matches('/')
        .split('/')
        .map(Value::from)
        .collect();
    Ok(Value::from(segments))
}

/// `a=1&a=2&b` → `{"a": ["1", "2"], "b": [""]}`.
pub fn parse_query(query: &str) -> Result<Value> {
    let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.entry(percent_decode(k, true)?)
            .or_default()
            .push(Value::from(percent_decode(v, true)?));
    }
    let obj: BTreeMap<Value, Value> = map
        .into_iter()
        .map(|(k, v)| (Value::from(k), Value::from(v)))
        .collect();
    Ok(Value::from(obj))
}

/// The query of a request path, as `parsed_query`.
pub fn parsed_query(path: &str) -> Result<Value> {
    parse_query(query_part(path))
}

fn json_depth_ok(body: &str) -> bool {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for c in body.bytes() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// How a body is read, decided from its headers alone.
enum BodyKind {
    /// No `parsed_body` (null); whether the body is truncated.
    Unparsed(bool),
    Form,
    Multipart,
    Json,
}

fn body_kind(
    content_type: Option<&str>,
    content_length: Option<&str>,
    partial: bool,
    body: &str,
) -> BodyKind {
    let Some(ct) = content_type else {
        return BodyKind::Unparsed(partial);
    };
    let json = ct.contains("application/json");
    let form = ct.contains("application/x-www-form-urlencoded");
    let multipart = ct.contains("multipart/form-data");
    if !(json || form || multipart) || body.is_empty() {
        return BodyKind::Unparsed(partial);
    }
    let declared = content_length.and_then(|l| l.trim().parse::<i64>().ok());
    if partial || declared.is_some_and(|l| l != -1 && l > body.len() as i64) {
        return BodyKind::Unparsed(true);
    }
    if body.len() > MAX_PARSED_BODY {
        return BodyKind::Unparsed(true);
    }
    if form {
        BodyKind::Form
    } else if multipart {
        BodyKind::Multipart
    } else {
        BodyKind::Json
    }
}

/// `parsed_body` and `truncated_body` for a request with these headers and body.
///
/// JSON bodies (content-type contains `application/json`), form bodies and multipart form
/// bodies ([`crate::multipart`]) are parsed;
/// anything else gives no `parsed_body`. A body shorter than its content-length, or sent
/// with `x-envoy-auth-partial-body: true`, is truncated and not parsed.
pub fn parsed_body(
    content_type: Option<&str>,
    content_length: Option<&str>,
    partial: bool,
    body: &str,
) -> Result<(Value, bool)> {
    match body_kind(content_type, content_length, partial, body) {
        BodyKind::Unparsed(truncated) => Ok((Value::Null, truncated)),
        BodyKind::Form => Ok((parse_query(body)?, false)),
        BodyKind::Multipart => Ok((
            crate::multipart::parse(content_type.unwrap_or_default(), body)?,
            false,
        )),
        BodyKind::Json => Ok((json_value(body)?, false)),
    }
}

/// Refuses exactly the bodies [`parsed_body`] refuses, without building their value: for a
/// policy that never reads `parsed_body`, a JSON body is only checked (its depth and its
/// syntax in one pass with nothing kept), so an unread body costs a scan, not a document.
pub fn check_body(
    content_type: Option<&str>,
    content_length: Option<&str>,
    partial: bool,
    body: &str,
) -> Result<()> {
    match body_kind(content_type, content_length, partial, body) {
        BodyKind::Json => {
            let mut d = serde_json::Deserializer::from_str(body);
            serde::de::DeserializeSeed::deserialize(JsonCheck(0), &mut d)
                .and_then(|()| d.end())
                .map_err(not_json)
        }
        _ => parsed_body(content_type, content_length, partial, body).map(drop),
    }
}

/// A JSON value read for its validity only, in one pass: nesting is counted as it is read
/// (deeper than [`MAX_JSON_DEPTH`] is refused, as the parser refuses it), numbers are parsed
/// as `serde_json::Value` parses them (one out of range is an error, which `IgnoredAny`
/// would skip), strings are unescaped in the reader's scratch space, and nothing is kept.
#[derive(Clone, Copy)]
struct JsonCheck(usize);

impl<'de> serde::de::DeserializeSeed<'de> for JsonCheck {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl JsonCheck {
    fn inner<E: serde::de::Error>(self) -> std::result::Result<Self, E> {
        if self.0 >= MAX_JSON_DEPTH {
            return Err(E::custom(format!("nests deeper than {MAX_JSON_DEPTH}")));
        }
        Ok(Self(self.0 + 1))
    }
}

impl<'de> serde::de::Visitor<'de> for JsonCheck {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<(), A::Error> {
        let inner = self.inner()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<(), A::Error> {
        let inner = self.inner()?;
        while map.next_entry_seed(inner, inner)?.is_some() {}
        Ok(())
    }
}

fn too_deep() -> Error {
    Error::Request(format!("JSON body nests deeper than {MAX_JSON_DEPTH}"))
}

fn not_json(e: serde_json::Error) -> Error {
    Error::Request(format!("body is not JSON: {e}"))
}

/// A JSON document (a body, or a JSON part of a multipart body), depth-bounded.
pub(crate) fn json_value(text: &str) -> Result<Value> {
    if !json_depth_ok(text) {
        return Err(too_deep());
    }
    let v: serde_json::Value = serde_json::from_str(text).map_err(not_json)?;
    Ok(Value::from(v))
}

#[cfg(test)]
#[path = "parsed_tests.rs"]
mod tests;
