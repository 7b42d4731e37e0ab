//! An event's free-form details: a JSON value, or a flat object a producer on a hot path
//! has already written in canonical form. Every authorized request writes one event, and
//! building a `serde_json::Value` only to sort and print it again cost more than the
//! SHA-256 of the chain; [`FlatObject`] writes the stored text in one pass instead.

use serde_json::Value;

use crate::event::{push_json_str, SENSITIVE_KEYS};

#[derive(Debug, Clone, PartialEq)]
pub enum Details {
    Json(Value),
    Flat(FlatObject),
}

impl Default for Details {
    fn default() -> Self {
        Self::Json(Value::Null)
    }
}

impl From<Value> for Details {
    fn from(v: Value) -> Self {
        Self::Json(v)
    }
}

impl From<FlatObject> for Details {
    fn from(o: FlatObject) -> Self {
        Self::Flat(o)
    }
}

impl Details {
    /// The details as a JSON value (what the slow path and tests look at).
    pub fn to_value(&self) -> Value {
        match self {
            Self::Json(v) => v.clone(),
            Self::Flat(o) => o.to_value(),
        }
    }
}

/// A JSON object of scalars written as canonical JSON (keys in byte order, no white space)
/// while it is built: byte-for-byte what [`crate::event::canonical_json`] makes of the
/// same object. Keys must come in strictly increasing byte order; one that does not is
/// kept aside and the object is then stored through the general path, so a producer's
/// mistake costs time, never a wrong record.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatObject {
    text: String,
    /// Keys are names in the producer's code, so they are `'static` and never copied.
    last_key: Option<&'static str>,
    /// A key out of order, or one whose value is redacted: store via the general path.
    needs_general_path: bool,
}

impl Default for FlatObject {
    /// The empty object: `{` written, as [`FlatObject::new`] starts.
    fn default() -> Self {
        Self::new()
    }
}

impl FlatObject {
    pub fn new() -> Self {
        let mut text = String::with_capacity(256);
        text.push('{');
        Self {
            text,
            last_key: None,
            needs_general_path: false,
        }
    }

    fn key(&mut self, k: &'static str) {
        let in_order = self.last_key.is_none_or(|last| last < k);
        if !in_order || SENSITIVE_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s)) {
            self.needs_general_path = true;
        }
        if self.last_key.is_some() {
            self.text.push(',');
        }
        push_json_str(&mut self.text, k);
        self.text.push(':');
        self.last_key = Some(k);
    }

    pub fn str(mut self, k: &'static str, v: &str) -> Self {
        self.key(k);
        push_json_str(&mut self.text, v);
        self
    }

    /// `null` when `v` is `None`, as `json!` writes an `Option`.
    pub fn opt_str(self, k: &'static str, v: Option<&str>) -> Self {
        match v {
            Some(v) => self.str(k, v),
            None => self.null(k),
        }
    }

    pub fn bool(mut self, k: &'static str, v: bool) -> Self {
        self.key(k);
        self.text.push_str(if v { "true" } else { "false" });
        self
    }

    pub fn u64(mut self, k: &'static str, v: u64) -> Self {
        use std::fmt::Write;
        self.key(k);
        let _ = write!(self.text, "{v}");
        self
    }

    pub fn opt_u64(self, k: &'static str, v: Option<u64>) -> Self {
        match v {
            Some(v) => self.u64(k, v),
            None => self.null(k),
        }
    }

    pub fn null(mut self, k: &'static str) -> Self {
        self.key(k);
        self.text.push_str("null");
        self
    }

    /// The finished text, and whether it is the stored form as it stands (false: a key was
    /// out of order or sensitive, and the text must go through the general path).
    pub(crate) fn into_text(mut self) -> (String, bool) {
        self.text.push('}');
        (self.text, !self.needs_general_path)
    }

    pub fn to_value(&self) -> Value {
        parse(&self.clone().into_text().0)
    }
}

/// A finished [`FlatObject`]'s text as a value. The text is JSON by construction; a parse
/// failure would be a bug in this module.
pub(crate) fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::event::canonical_json;
    use serde_json::json;

    fn general(v: &Value) -> String {
        let mut out = String::new();
        assert!(canonical_json(v, &mut out, 0, 1 << 20));
        out
    }

    #[test]
    fn flat_object_writes_what_the_general_path_writes() {
        let o = FlatObject::new()
            .bool("dry_run", false)
            .str("path", "/a \"quoted\" \\ path\n日本")
            .opt_str("policy.hash", None)
            .opt_str("policy.set", Some("default"))
            .bool("policy_allowed", true)
            .opt_u64("status", Some(403))
            .u64("z", u64::MAX);
        let v = json!({
            "dry_run": false, "path": "/a \"quoted\" \\ path\n日本", "policy.hash": null,
            "policy.set": "default", "policy_allowed": true, "status": 403, "z": u64::MAX,
        });
        assert_eq!(o.to_value(), v);
        assert_eq!(o.into_text(), (general(&v), true));
    }

    #[test]
    fn empty_flat_object_is_an_empty_json_object() {
        assert_eq!(FlatObject::new().into_text(), ("{}".to_owned(), true));
        assert_eq!(FlatObject::default(), FlatObject::new());
    }

    #[test]
    fn flat_object_with_keys_out_of_order_takes_the_general_path() {
        let o = FlatObject::new().str("b", "1").str("a", "2");
        assert_eq!(general(&o.to_value()), r#"{"a":"2","b":"1"}"#);
        assert!(!o.into_text().1);
        let dup = FlatObject::new().str("a", "1").str("a", "2");
        assert!(!dup.into_text().1);
    }

    #[test]
    fn flat_object_with_a_sensitive_key_takes_the_general_path() {
        let o = FlatObject::new().str("Authorization", "Bearer x");
        assert!(!o.into_text().1);
    }
}
