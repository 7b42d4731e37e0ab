//! A policy set's `bundle_*` keys: the bundle server it polls, the token and roots it uses,
//! and how often. Parsed here so that a wrong URL, an unreadable token or roots file, or an
//! unsigned bundle over plain HTTP stops `serve` at start with the key named.

use std::path::Path;

use esm_authz::bundle_service::{parse_roots, RemoteBundle};

use crate::authz::RawSet;
use crate::Error;

/// Tokens and root files are small; anything larger is a wrong path.
const MAX_FILE: u64 = 1 << 20;

/// The set's bundle server, or None when `bundle_url` is empty. `key` names a key of this
/// set (`authz.bundle_url`, `authz.sets.NAME.bundle_url`); `signed`: `bundle_key` is set.
pub(crate) fn parse(
    set: &str,
    raw: &RawSet,
    key: &dyn Fn(&str) -> String,
    data_dir: &Path,
    signed: bool,
) -> crate::Result<Option<RemoteBundle>> {
    let url = raw.bundle_url.trim();
    if url.is_empty() {
        return Ok(None);
    }
    let (scheme, rest) = url.split_once("://").unwrap_or_default();
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if !matches!(scheme, "http" | "https") || host.is_empty() || url.contains(char::is_whitespace) {
        return Err(Error::expected(
            &key("bundle_url"),
            format!("{url:?}"),
            "an http:// or https:// URL of a bundle",
        ));
    }
    // The set's name becomes a file name under bundles/.
    if set.starts_with('.')
        || !set
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::rule(
            &key("bundle_url"),
            format!("a set with a bundle_url needs a name of letters, digits, '-', '_' and '.' (not {set:?})"),
        ));
    }
    if scheme == "http" && !signed {
        let k = key("bundle_url");
        return Err(Error::rule(
            &k,
            format!(
                "{k} is plain http:// and {} is not set: anyone on the network path could \
                 write the policy. Set {} (signed bundles), or use https://",
                key("bundle_key"),
                key("bundle_key")
            ),
        ));
    }
    let token = match raw.bundle_token.as_str() {
        "" => None,
        name => {
            let text =
                crate::files::read_text(&key("bundle_token"), &data_dir.join(name), MAX_FILE)?;
            let t = text.trim();
            if t.is_empty() || t.contains(|c: char| c.is_control()) {
                return Err(Error::content(
                    &key("bundle_token"),
                    "the token file is empty or holds more than one line",
                ));
            }
            Some(t.to_owned())
        }
    };
    let roots = match raw.bundle_ca.as_str() {
        "" => None,
        name => {
            let path = data_dir.join(name);
            let pem = crate::files::read_at_most(&key("bundle_ca"), &path, MAX_FILE)?;
            Some(parse_roots(&pem).map_err(|e| Error::content(&key("bundle_ca"), e))?)
        }
    };
    let min = crate::duration(&key("bundle_poll_min"), &raw.bundle_poll_min)?;
    let max = crate::duration(&key("bundle_poll_max"), &raw.bundle_poll_max)?;
    if max < min {
        return Err(Error::rule(
            &key("bundle_poll_max"),
            format!(
                "{} is shorter than {}",
                key("bundle_poll_max"),
                key("bundle_poll_min")
            ),
        ));
    }
    let std_duration = |k: &str, d: time::Duration| {
        std::time::Duration::try_from(d)
            .map_err(|_| Error::rule(&key(k), format!("{} is out of range", key(k))))
    };
    Ok(Some(RemoteBundle {
        url: url.to_owned(),
        token,
        roots,
        poll_min: std_duration("bundle_poll_min", min)?,
        poll_max: std_duration("bundle_poll_max", max)?,
        persisted: data_dir.join("bundles").join(format!("{set}.tar.gz")),
    }))
}
