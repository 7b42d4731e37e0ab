//! Value forms shared by every section: numbers and booleans that may come from the file or
//! from `ESM_…` variables (always strings), durations and listen addresses.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::Error;

/// Numbers may come from the file (integers) or from `ESM_…` variables (strings).
pub(crate) fn int_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        Int(u64),
        Text(String),
    }
    match V::deserialize(d)? {
        V::Int(n) => Ok(n),
        V::Text(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a whole number"))),
    }
}

/// Booleans may come from the file or from `ESM_…` variables (`true`/`false`, `1`/`0`).
pub(crate) fn bool_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        Bool(bool),
        Text(String),
    }
    match V::deserialize(d)? {
        V::Bool(b) => Ok(b),
        V::Text(s) => match s.trim() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(serde::de::Error::custom(format!(
                "{s:?} is not true or false"
            ))),
        },
    }
}

/// Lists may come from the file (an array of strings) or from `ESM_…` variables (one
/// string, the items separated by commas or white space).
pub(crate) fn list_or_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        List(Vec<String>),
        Text(String),
    }
    Ok(match V::deserialize(d)? {
        V::List(items) => items,
        V::Text(s) => s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Parses a duration such as `90s`, `10m`, `1h`, `7d`; `what` names the key (or flag).
pub fn duration(what: &str, s: &str) -> crate::Result<time::Duration> {
    let d = humantime::parse_duration(s).map_err(|e| {
        Error::bad_value(
            what,
            format!("{s:?}"),
            format!("not a duration like 90s, 1h, 7d ({e})"),
        )
    })?;
    let d = time::Duration::try_from(d)
        .map_err(|_| Error::bad_value(what, format!("{s:?}"), "too long"))?;
    if d <= time::Duration::ZERO {
        return Err(Error::bad_value(what, format!("{s:?}"), "must be positive"));
    }
    Ok(d)
}

/// A listen address where empty means "off".
pub fn optional_addr(what: &str, s: &str) -> crate::Result<Option<SocketAddr>> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| Error::bad_value(what, format!("{s:?}"), e))
}
