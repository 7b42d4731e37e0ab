//! A policy's result → a [`Decision`], the way OPA-Envoy reads it: a boolean, or an object
//! with `allowed` and optional `headers`, `response_headers_to_add`,
//! `request_headers_to_remove`, `query_parameters_to_set`, `query_parameters_to_remove`,
//! `body`, `http_status` and `dynamic_metadata`. Anything else is an error, and an error
//! denies.

use regorus::Value;

use crate::error::{Error, Result};

/// What the policy decided, before it is put into Envoy's response.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub allowed: bool,
    /// Upstream when allowed, to the client when denied.
    pub headers: Vec<(String, String)>,
    pub response_headers_to_add: Vec<(String, String)>,
    pub request_headers_to_remove: Vec<String>,
    pub query_parameters_to_set: Vec<(String, String)>,
    pub query_parameters_to_remove: Vec<String>,
    /// Denials only.
    pub body: Option<String>,
    /// Denials only; 403 when absent.
    pub http_status: Option<u16>,
    pub dynamic_metadata: Option<serde_json::Value>,
}

fn field<'a>(obj: &'a regorus::value::Object, name: &str) -> Option<&'a Value> {
    obj.get(&Value::from(name))
        .filter(|v| !matches!(v, Value::Undefined))
}

fn string(v: &Value, what: &str) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.to_string()),
        _ => Err(Error::Result(format!("{what}: expected a string"))),
    }
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>> {
    match v {
        Value::Array(a) => a.iter().map(|x| string(x, what)).collect(),
        Value::Set(s) => s.iter().map(|x| string(x, what)).collect(),
        _ => Err(Error::Result(format!(
            "{what}: expected an array of strings"
        ))),
    }
}

/// `{"k": "v"}`, `{"k": ["v1", "v2"]}` or an array of such objects.
fn header_pairs(v: &Value, what: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut add_obj = |o: &Value| -> Result<()> {
        let Value::Object(o) = o else {
            return Err(Error::Result(format!("{what}: expected an object")));
        };
        for (k, v) in o.iter() {
            let k = string(k, what)?;
            match v {
                Value::String(s) => out.push((k, s.to_string())),
                Value::Array(_) | Value::Set(_) => {
                    for s in strings(v, what)? {
                        out.push((k.clone(), s));
                    }
                }
                _ => {
                    return Err(Error::Result(format!(
                        "{what}: header {k:?} is not a string"
                    )))
                }
            }
        }
        Ok(())
    };
    match v {
        Value::Array(items) => {
            for item in items.iter() {
                add_obj(item)?;
            }
        }
        other => add_obj(other)?,
    }
    Ok(out)
}

/// Reads a policy result. `Undefined` (no rule matched and no default) is an error: it
/// denies, and is counted separately from a plain `false`.
pub fn from_result(v: &Value) -> Result<Decision> {
    match v {
        Value::Bool(b) => Ok(Decision {
            allowed: *b,
            ..Decision::default()
        }),
        Value::Undefined => Err(Error::Result("undefined".into())),
        Value::Object(o) => {
            let allowed = match field(o, "allowed") {
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(Error::Result("allowed: expected a boolean".into())),
                None => return Err(Error::Result("missing \"allowed\"".into())),
            };
            let mut d = Decision {
                allowed,
                ..Decision::default()
            };
            if let Some(h) = field(o, "headers") {
                d.headers = header_pairs(h, "headers")?;
            }
            if let Some(h) = field(o, "response_headers_to_add") {
                d.response_headers_to_add = header_pairs(h, "response_headers_to_add")?;
            }
            if let Some(h) = field(o, "request_headers_to_remove") {
                d.request_headers_to_remove = strings(h, "request_headers_to_remove")?;
            }
            if let Some(q) = field(o, "query_parameters_to_set") {
                d.query_parameters_to_set = header_pairs(q, "query_parameters_to_set")?;
            }
            if let Some(q) = field(o, "query_parameters_to_remove") {
                d.query_parameters_to_remove = strings(q, "query_parameters_to_remove")?;
            }
            if let Some(b) = field(o, "body") {
                d.body = Some(string(b, "body")?);
            }
            if let Some(s) = field(o, "http_status") {
                let code = s
                    .as_u64()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(|| Error::Result("http_status: expected 100..599".into()))?;
                d.http_status = Some(code as u16);
            }
            if let Some(m) = field(o, "dynamic_metadata") {
                if !matches!(m, Value::Object(_)) {
                    return Err(Error::Result("dynamic_metadata: expected an object".into()));
                }
                let text = m.to_json_str().map_err(|e| Error::Result(e.to_string()))?;
                d.dynamic_metadata = serde_json::from_str(&text).ok();
            }
            Ok(d)
        }
        _ => Err(Error::Result(
            "expected a boolean or an object with \"allowed\"".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn v(json: &str) -> Value {
        Value::from_json_str(json).unwrap()
    }

    #[test]
    fn boolean_results() {
        assert!(from_result(&Value::from(true)).unwrap().allowed);
        assert!(!from_result(&Value::from(false)).unwrap().allowed);
    }

    #[test]
    fn undefined_and_wrong_types_are_errors() {
        assert!(from_result(&Value::Undefined).is_err());
        assert!(from_result(&v("1")).is_err());
        assert!(from_result(&v(r#"{"headers": {}}"#)).is_err());
        assert!(from_result(&v(r#"{"allowed": "yes"}"#)).is_err());
        assert!(from_result(&v(r#"{"allowed": false, "http_status": 42}"#)).is_err());
        assert!(from_result(&v(r#"{"allowed": true, "headers": {"a": 1}}"#)).is_err());
        assert!(from_result(&v(r#"{"allowed": true, "dynamic_metadata": [1]}"#)).is_err());
    }

    #[test]
    fn object_results_map_every_field() {
        let d = from_result(&v(r#"{
            "allowed": false,
            "headers": [{"x-a": "1"}, {"x-b": ["2", "3"]}],
            "response_headers_to_add": {"x-r": "r"},
            "request_headers_to_remove": ["cookie"],
            "query_parameters_to_set": {"q": "1"},
            "query_parameters_to_remove": ["secret"],
            "body": "nope",
            "http_status": 401,
            "dynamic_metadata": {"k": {"n": 1}}
        }"#))
        .unwrap();
        assert!(!d.allowed);
        assert_eq!(
            d.headers,
            vec![
                ("x-a".into(), "1".into()),
                ("x-b".into(), "2".into()),
                ("x-b".into(), "3".into())
            ]
        );
        assert_eq!(d.response_headers_to_add, vec![("x-r".into(), "r".into())]);
        assert_eq!(d.request_headers_to_remove, vec!["cookie".to_string()]);
        assert_eq!(d.query_parameters_to_set, vec![("q".into(), "1".into())]);
        assert_eq!(d.query_parameters_to_remove, vec!["secret".to_string()]);
        assert_eq!(d.body.as_deref(), Some("nope"));
        assert_eq!(d.http_status, Some(401));
        assert_eq!(d.dynamic_metadata, Some(serde_json::json!({"k": {"n": 1}})));
    }
}
