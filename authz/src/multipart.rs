//! `multipart/form-data` request bodies as OPA-Envoy puts them in `parsed_body`: field name →
//! list of values, in body order. A part whose `Content-Type` is JSON is parsed; any other
//! part is its text. Parts without a form name are skipped. The boundary comes from the
//! request's content type (RFC 2046 §5.1.1, RFC 7578); CRLF and bare LF line ends are both
//! read, as Go's `mime/multipart` reads them.
//!
//! Pure and bounded: at most [`MAX_PARTS`] parts and [`MAX_PART_HEADERS`] header bytes per
//! part (the whole body is already bounded by [`crate::parsed::MAX_PARSED_BODY`]). A body that
//! breaks a bound or the format is the peer's fault: an error, which denies.

use std::collections::BTreeMap;

use regorus::Value;

use crate::error::{Error, Result};

/// Parts read from one body.
pub const MAX_PARTS: usize = 256;
/// Bytes of headers in one part.
pub const MAX_PART_HEADERS: usize = 8 << 10;
/// RFC 2046: a boundary is 1 to 70 characters.
const MAX_BOUNDARY: usize = 70;

fn bad(reason: impl std::fmt::Display) -> Error {
    Error::Request(format!("multipart body: {reason}"))
}

/// A `name=value` parameter of a header value (`; boundary="x"`), name without case.
fn param<'a>(header_value: &'a str, name: &str) -> Option<&'a str> {
    header_value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
    })
}

/// The boundary named in a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Result<&str> {
    let b = param(content_type, "boundary").ok_or_else(|| bad("no boundary in content type"))?;
    if b.is_empty() || b.len() > MAX_BOUNDARY {
        return Err(bad(format!("a boundary is 1 to {MAX_BOUNDARY} characters")));
    }
    Ok(b)
}

/// The rest of the line at `at` and where the next line starts (after CRLF or LF).
fn line(body: &str, at: usize) -> (&str, usize) {
    let end = body[at..].find('\n').map_or(body.len(), |n| at + n);
    let text = body[at..end].strip_suffix('\r').unwrap_or(&body[at..end]);
    (text, (end + 1).min(body.len()))
}

struct Part<'a> {
    name: Option<&'a str>,
    json: bool,
    content: &'a str,
}

/// Reads the headers of a part starting at `at`; returns them and where the content starts.
fn headers(body: &str, mut at: usize) -> Result<(Option<&str>, bool, usize)> {
    let start = at;
    let (mut name, mut json) = (None, false);
    loop {
        if at >= body.len() {
            return Err(bad("a part ends inside its headers"));
        }
        let (text, next) = line(body, at);
        if next - start > MAX_PART_HEADERS {
            return Err(bad(format!("part headers over {MAX_PART_HEADERS} bytes")));
        }
        at = next;
        if text.is_empty() {
            return Ok((name, json, at));
        }
        let (key, value) = text
            .split_once(':')
            .ok_or_else(|| bad("a part header without a colon"))?;
        let key = key.trim();
        if key.eq_ignore_ascii_case("content-disposition") {
            if !value
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("form-data")
            {
                continue;
            }
            name = param(value, "name").filter(|n| !n.is_empty());
        } else if key.eq_ignore_ascii_case("content-type") {
            json = value.to_ascii_lowercase().contains("application/json");
        }
    }
}

fn parts<'a>(body: &'a str, boundary: &str) -> Result<Vec<Part<'a>>> {
    let delimiter = format!("--{boundary}");
    // The first delimiter may open the body or follow a preamble.
    let mut at = if body.starts_with(&delimiter) {
        0
    } else {
        body.find(&format!("\n{delimiter}"))
            .map(|n| n + 1)
            .ok_or_else(|| bad("no boundary line"))?
    };
    let mut out = Vec::new();
    loop {
        let after = at + delimiter.len();
        if body[after..].starts_with("--") {
            return Ok(out);
        }
        let (rest, next) = line(body, after);
        if !rest.trim_end().is_empty() || next == body.len() && !body.ends_with('\n') {
            return Err(bad("a boundary line with trailing text or no end"));
        }
        if out.len() == MAX_PARTS {
            return Err(bad(format!("more than {MAX_PARTS} parts")));
        }
        let (name, json, content_start) = headers(body, next)?;
        let close = body[content_start..]
            .find(&format!("\n{delimiter}"))
            .map(|n| content_start + n)
            .ok_or_else(|| bad("a part without a closing boundary"))?;
        let content = &body[content_start..close];
        out.push(Part {
            name,
            json,
            content: content.strip_suffix('\r').unwrap_or(content),
        });
        at = close + 1;
    }
}

/// `parsed_body` of a `multipart/form-data` body.
pub fn parse(content_type: &str, body: &str) -> Result<Value> {
    let mut fields: BTreeMap<Value, Vec<Value>> = BTreeMap::new();
    for part in parts(body, boundary(content_type)?)? {
        let Some(name) = part.name else {
            continue;
        };
        let value = if part.json {
            crate::parsed::json_value(part.content)?
        } else {
            Value::from(part.content)
        };
        fields.entry(Value::from(name)).or_default().push(value);
    }
    let obj: BTreeMap<Value, Value> = fields
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .collect();
    Ok(Value::from(obj))
}

#[cfg(test)]
#[path = "multipart_tests.rs"]
mod tests;
