//! The `[authz]` section of esm.toml: where ext_authz listens, which policy set it serves,
//! and how it fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use serde::Deserialize;

pub const DEFAULT_TOML: &str = r#"
[authz]
# Envoy's ext_authz gRPC cluster points here (HTTP/2). Empty: ext_authz is off.
listen = "127.0.0.1:9191"
# The policy set: .rego files and data.json/data.yaml (relative to this directory).
# Re-read every second; a change that does not compile or fails its own Rego tests is
# refused and the old policy keeps serving.
policy_dir = "policies"
# The decision rule, as OPA-Envoy's default path envoy/authz/allow.
rule = "data.envoy.authz.allow"
# Allow everything, and only log and count what the policy would have denied.
dry_run = false
# The status of a denial that does not set one, and of every fail-closed denial.
deny_status = 403
# Evaluation time budget per decision; over budget denies.
decision_budget = "100ms"
# Read the caller's SPIFFE ID from x-forwarded-client-cert when the peer principal has none.
xfcc = false
"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuthz {
    listen: String,
    policy_dir: String,
    rule: String,
    #[serde(deserialize_with = "bool_or_string")]
    dry_run: bool,
    #[serde(deserialize_with = "crate::config::int_or_string")]
    deny_status: u64,
    decision_budget: String,
    #[serde(deserialize_with = "bool_or_string")]
    xfcc: bool,
}

impl Default for RawAuthz {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9191".into(),
            policy_dir: "policies".into(),
            rule: "data.envoy.authz.allow".into(),
            dry_run: false,
            deny_status: 403,
            decision_budget: "100ms".into(),
            xfcc: false,
        }
    }
}

fn bool_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
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

#[derive(Debug, Clone)]
pub struct AuthzConfig {
    pub listen: Option<SocketAddr>,
    pub policy_dir: PathBuf,
    pub rule: String,
    pub dry_run: bool,
    pub deny_status: u16,
    pub decision_budget: std::time::Duration,
    pub xfcc: bool,
}

pub fn parse(raw: RawAuthz, data_dir: &Path) -> anyhow::Result<AuthzConfig> {
    let listen = if raw.listen.is_empty() {
        None
    } else {
        Some(
            raw.listen
                .parse()
                .map_err(|e| anyhow!("authz.listen = {:?}: {e}", raw.listen))?,
        )
    };
    if !(raw.rule.starts_with("data.") && raw.rule.len() > 5) {
        bail!(
            "authz.rule = {:?}: expected a rule path like data.envoy.authz.allow",
            raw.rule
        );
    }
    if !(400..=599).contains(&raw.deny_status) {
        bail!("authz.deny_status = {}: expected 400..599", raw.deny_status);
    }
    let budget = crate::config::duration("authz.decision_budget", &raw.decision_budget)?;
    Ok(AuthzConfig {
        listen,
        policy_dir: data_dir.join(&raw.policy_dir),
        rule: raw.rule,
        dry_run: raw.dry_run,
        deny_status: raw.deny_status as u16,
        decision_budget: std::time::Duration::try_from(budget)
            .map_err(|_| anyhow!("authz.decision_budget is out of range"))?,
        xfcc: raw.xfcc,
    })
}
