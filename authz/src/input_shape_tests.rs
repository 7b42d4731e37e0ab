#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The shape the VM's checks rely on holds for every input esm builds: at a path said to hold
//! a collection there is a collection (or nothing), at one said to hold a string a string.

use regorus::Value;

use super::{collection, string};
use crate::input::{build, InputOptions};
use crate::memo_agrees_tests::requests;
use crate::policy_set::SourceFile;

/// Every path of `v` with its value, keys as the shape reads them.
fn walk<'v>(v: &'v Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, &'v Value)>) {
    out.push((path.clone(), v));
    let children: Vec<(String, &Value)> = match v {
        Value::Object(o) => o
            .iter()
            .map(|(k, c)| {
                (
                    k.as_string()
                        .map_or_else(|_| k.to_string(), |s| s.to_string()),
                    c,
                )
            })
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, c)| (i.to_string(), c))
            .collect(),
        _ => Vec::new(),
    };
    for (k, c) in children {
        path.push(k);
        walk(c, path, out);
        path.pop();
    }
}

#[test]
fn the_shape_holds_for_every_built_input() {
    let literals = SourceFile {
        path: "p.rego".into(),
        text: r#""spiffe://example.org/ns/prod/sa/web" "/items" "/commands""#.into(),
    };
    let (mut collections, mut strings) = (0, 0);
    for xfcc in [false, true] {
        for req in requests(std::slice::from_ref(&literals), 1500) {
            let Ok(input) = build(
                &req,
                &InputOptions {
                    xfcc,
                    ..Default::default()
                },
            ) else {
                continue;
            };
            let mut paths = Vec::new();
            walk(&input, &mut Vec::new(), &mut paths);
            for (path, v) in paths {
                let keys: Vec<Option<&str>> = path.iter().map(|k| Some(k.as_str())).collect();
                if collection(&keys) {
                    collections += 1;
                    assert!(
                        matches!(v, Value::Object(_) | Value::Array(_) | Value::Set(_)),
                        "{path:?} is {v}"
                    );
                }
                if string(&keys) {
                    strings += 1;
                    assert!(matches!(v, Value::String(_)), "{path:?} is {v}");
                }
            }
        }
    }
    assert!(
        collections > 10_000 && strings > 10_000,
        "{collections} {strings}"
    );
}
