//! The `[authz]` section of esm.toml: where ext_authz listens, which policy sets it serves,
//! and how it fails.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use esm_authz::grpc_body::{ProtoDescriptors, MAX_DESCRIPTOR_SET};
use esm_authz::input::InputOptions;
use esm_authz::jwt_builtins::JwtKeys;
use esm_authz::service::{DecisionLog, DecisionLogMode};
use esm_authz::source::{PolicySource, SetSpec};
use serde::Deserialize;

use crate::values::{bool_or_string, int_or_string, list_or_string};
use crate::Error;

pub const DEFAULT_TOML: &str = r#"
[authz]
# Envoy's ext_authz gRPC cluster points here (HTTP/2). Empty: no TCP listener.
listen = "127.0.0.1:9191"
# Also serve on a Unix socket (relative to this directory, mode 0660), e.g. "authz.sock".
listen_unix = ""
# Serve the TCP listener over mutual TLS: esm presents spiffe://<trust domain>/esm/authz
# (issued by its own CA, renewed at half life and on every CA change), and Envoy must
# present an X509-SVID of this trust domain (e.g. from esm's SDS). The Unix socket stays
# plain: its file mode says who may ask.
tls = false
# With tls: the SPIFFE IDs of the Envoys allowed to call, e.g.
# ["spiffe://example.org/ns/edge/sa/envoy"]. Any other SVID fails the handshake, is logged
# with its spiffe.id and counted (esm_mtls_peers_refused_total). Empty: any SVID of this
# trust domain.
allowed_spiffe_ids = []
# The policy set: .rego files and data.json/data.yaml (relative to this directory), or an
# OPA bundle (a path ending in .tar.gz). Re-read every second and on SIGHUP; a change that
# does not compile or fails its own Rego tests is refused and the old policy keeps serving.
# SIGHUP also re-reads this file: the [authz] settings and each set's keys apply at once,
# listeners and other sections at the next start (docs/architecture.md).
policy_dir = "policies"
# A PEM public key or JWKS file: when set, a bundle must carry a signature from it.
bundle_key = ""
# Poll an OPA bundle server for this set's policy instead of reading policy_dir: a GET with
# If-None-Match (an unchanged bundle costs a 304), at a random time between bundle_poll_min
# and bundle_poll_max. A new bundle is checked as a reload is (signature, compile, its Rego
# tests) and only then kept, at bundles/<set>.tar.gz, which is what the set serves; a
# restart while the server is down enforces that last good bundle. An http:// URL needs
# bundle_key (unsigned policy over plain HTTP could be written by anyone on the path).
bundle_url = ""
# A file holding a bearer token sent to the bundle server (Authorization: Bearer ...).
bundle_token = ""
# PEM roots for an https:// bundle server; empty: the public WebPKI roots.
bundle_ca = ""
bundle_poll_min = "60s"
bundle_poll_max = "120s"
# A JWKS (or PEM) file for io.jwt.* when a policy passes no key (esm's http.send is off).
jwks = ""
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
# Leave parsed_body and truncated_body out of the input, and never deny a request for what
# its body holds (OPA-Envoy's skip-request-body-parse).
skip_request_body_parse = false
# A FileDescriptorSet (protoc --include_imports --descriptor_set_out=FILE) whose services'
# gRPC request bodies are decoded into parsed_body; Envoy must send them with
# with_request_body.pack_as_bytes = true. Empty: gRPC bodies are null.
proto_descriptor = ""
# Which decisions are audited: "all", "denied" (denials, fail-closed and dry-run would-be
# denials) or "off".
decision_log = "all"
# When a decision's record must be on disk: "async" answers at once and commits records in
# groups (a crash loses the last few milliseconds of records); "sync" answers only after
# the record is committed (concurrent Checks share one commit) and denies with 503 when it
# cannot be.
decision_log_mode = "async"
# Decisions memoized per policy set, keyed by exactly the input fields the policy reads
# (found from its source): requests that agree on them share one evaluation. Sets that use
# the clock, randomness or the network (time.now_ns, io.jwt.*, http.send, ...) or read the
# whole input are never memoized. 0 evaluates every request.
decision_memo = 4096

# More policy sets, each picked by an Envoy route with the context extension
# policy_set = "<name>"; each takes policy_dir, bundle_key, bundle_url, bundle_token,
# bundle_ca, bundle_poll_min, bundle_poll_max, jwks, rule and dry_run.
# [authz.sets.canary]
# policy_dir = "policies-next"
# dry_run = true
"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAuthz {
    listen: String,
    listen_unix: String,
    #[serde(deserialize_with = "bool_or_string")]
    tls: bool,
    #[serde(deserialize_with = "list_or_string")]
    allowed_spiffe_ids: Vec<String>,
    policy_dir: String,
    bundle_key: String,
    bundle_url: String,
    bundle_token: String,
    bundle_ca: String,
    bundle_poll_min: String,
    bundle_poll_max: String,
    jwks: String,
    rule: String,
    #[serde(deserialize_with = "bool_or_string")]
    dry_run: bool,
    #[serde(deserialize_with = "int_or_string")]
    deny_status: u64,
    decision_budget: String,
    #[serde(deserialize_with = "bool_or_string")]
    xfcc: bool,
    #[serde(deserialize_with = "bool_or_string")]
    skip_request_body_parse: bool,
    proto_descriptor: String,
    decision_log: String,
    decision_log_mode: String,
    #[serde(deserialize_with = "int_or_string")]
    decision_memo: u64,
    sets: BTreeMap<String, RawSet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawSet {
    pub(crate) policy_dir: String,
    pub(crate) bundle_key: String,
    pub(crate) bundle_url: String,
    pub(crate) bundle_token: String,
    pub(crate) bundle_ca: String,
    pub(crate) bundle_poll_min: String,
    pub(crate) bundle_poll_max: String,
    pub(crate) jwks: String,
    pub(crate) rule: String,
    #[serde(deserialize_with = "bool_or_string")]
    pub(crate) dry_run: bool,
}

impl Default for RawSet {
    fn default() -> Self {
        Self {
            policy_dir: "policies".into(),
            bundle_key: String::new(),
            bundle_url: String::new(),
            bundle_token: String::new(),
            bundle_ca: String::new(),
            bundle_poll_min: "60s".into(),
            bundle_poll_max: "120s".into(),
            jwks: String::new(),
            rule: "data.envoy.authz.allow".into(),
            dry_run: false,
        }
    }
}

impl Default for RawAuthz {
    fn default() -> Self {
        let set = RawSet::default();
        Self {
            listen: "127.0.0.1:9191".into(),
            listen_unix: String::new(),
            tls: false,
            allowed_spiffe_ids: Vec::new(),
            policy_dir: set.policy_dir,
            bundle_key: set.bundle_key,
            bundle_url: set.bundle_url,
            bundle_token: set.bundle_token,
            bundle_ca: set.bundle_ca,
            bundle_poll_min: set.bundle_poll_min,
            bundle_poll_max: set.bundle_poll_max,
            jwks: set.jwks,
            rule: set.rule,
            dry_run: set.dry_run,
            deny_status: 403,
            decision_budget: "100ms".into(),
            xfcc: false,
            skip_request_body_parse: false,
            proto_descriptor: String::new(),
            decision_log: "all".into(),
            decision_log_mode: "async".into(),
            decision_memo: esm_authz::decision_memo::DEFAULT_CAPACITY as u64,
            sets: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuthzConfig {
    pub listen: Option<SocketAddr>,
    pub listen_unix: Option<PathBuf>,
    /// Mutual TLS on `listen`; `None`: plain TCP.
    pub tls: Option<crate::authz_tls::AuthzTls>,
    /// Never empty: the first is the default set (named `default`).
    pub sets: Vec<SetSpec>,
    pub deny_status: u16,
    pub decision_budget: std::time::Duration,
    /// How inputs are built: XFCC, body parsing, gRPC descriptors.
    pub input: InputOptions,
    pub decision_log: DecisionLog,
    pub decision_log_mode: DecisionLogMode,
}

/// A memo entry holds at most a 2 KiB key and a result: a million is a few GiB, far past
/// what an edge box should spend on it.
const MAX_MEMO: u64 = 1_000_000;

/// Reads `authz.proto_descriptor`: a wrong path, a file that is not a descriptor set, or one
/// that does not link is the config's fault, reported with the key.
fn proto_descriptor(name: &str, data_dir: &Path) -> crate::Result<Option<ProtoDescriptors>> {
    if name.is_empty() {
        return Ok(None);
    }
    let path = data_dir.join(name);
    let key = "authz.proto_descriptor";
    let bytes = crate::files::read_at_most(key, &path, MAX_DESCRIPTOR_SET)?;
    let problem = |problem: String| Error::KeyFile {
        key: key.to_owned(),
        path: path.clone(),
        problem,
    };
    if bytes.len() as u64 > MAX_DESCRIPTOR_SET {
        return Err(problem(format!("larger than {MAX_DESCRIPTOR_SET} bytes")));
    }
    ProtoDescriptors::from_bytes(&bytes)
        .map(Some)
        .map_err(|e| problem(e.to_string()))
}

/// Key files are small; anything larger is a wrong path.
const MAX_KEY_FILE: u64 = 1 << 20;

fn key_file(what: &str, name: &str, data_dir: &Path) -> crate::Result<Option<String>> {
    if name.is_empty() {
        return Ok(None);
    }
    let path = data_dir.join(name);
    let text = crate::files::read_text(what, &path, MAX_KEY_FILE)?;
    Ok(Some(text))
}

fn parse_set(name: &str, raw: RawSet, data_dir: &Path) -> crate::Result<SetSpec> {
    let key = |k: &str| {
        format!(
            "authz{}.{k}",
            if name == "default" {
                String::new()
            } else {
                format!(".sets.{name}")
            }
        )
    };
    if !(raw.rule.starts_with("data.") && raw.rule.len() > 5) {
        return Err(Error::expected(
            &key("rule"),
            format!("{:?}", raw.rule),
            "a rule path like data.envoy.authz.allow",
        ));
    }
    if raw.policy_dir.is_empty() {
        let k = key("policy_dir");
        return Err(Error::rule(&k, format!("{k} is empty")));
    }
    let bundle_keys = key_file(&key("bundle_key"), &raw.bundle_key, data_dir)?
        .map(|t| esm_authz::jwt::parse_keys(&t))
        .transpose()
        .map_err(|e| Error::content(&key("bundle_key"), e))?;
    let remote = crate::bundle_server::parse(name, &raw, &key, data_dir, bundle_keys.is_some())?;
    let source = match &remote {
        Some(r) => PolicySource::Bundle {
            path: r.persisted.clone(),
            keys: bundle_keys,
        },
        None => PolicySource::from_path(data_dir.join(&raw.policy_dir), bundle_keys),
    };
    if matches!(source, PolicySource::Dir(_)) && !raw.bundle_key.is_empty() {
        return Err(Error::rule(
            &key("bundle_key"),
            format!(
                "{} is set but {} is not a .tar.gz bundle",
                key("bundle_key"),
                key("policy_dir")
            ),
        ));
    }
    let jwt_keys = key_file(&key("jwks"), &raw.jwks, data_dir)?
        .map(|t| JwtKeys::from_text(&t))
        .transpose()
        .map_err(|e| Error::content(&key("jwks"), e))?
        .unwrap_or_default();
    Ok(SetSpec {
        name: name.to_owned(),
        source,
        rule: raw.rule,
        dry_run: raw.dry_run,
        jwt_keys,
        memo_capacity: esm_authz::decision_memo::DEFAULT_CAPACITY,
        remote: remote.map(std::sync::Arc::new),
    })
}

pub(crate) fn parse(raw: RawAuthz, data_dir: &Path) -> crate::Result<AuthzConfig> {
    let listen = crate::optional_addr("authz.listen", &raw.listen)?;
    let listen_unix = (!raw.listen_unix.is_empty()).then(|| data_dir.join(&raw.listen_unix));
    let tls = crate::authz_tls::parse(raw.tls, &raw.allowed_spiffe_ids, listen)?;
    if !(400..=599).contains(&raw.deny_status) {
        return Err(Error::expected(
            "authz.deny_status",
            raw.deny_status.to_string(),
            "400..599",
        ));
    }
    let budget = crate::duration("authz.decision_budget", &raw.decision_budget)?;
    let default_set = RawSet {
        policy_dir: raw.policy_dir,
        bundle_key: raw.bundle_key,
        bundle_url: raw.bundle_url,
        bundle_token: raw.bundle_token,
        bundle_ca: raw.bundle_ca,
        bundle_poll_min: raw.bundle_poll_min,
        bundle_poll_max: raw.bundle_poll_max,
        jwks: raw.jwks,
        rule: raw.rule,
        dry_run: raw.dry_run,
    };
    let mut sets = vec![parse_set("default", default_set, data_dir)?];
    for (name, set) in raw.sets {
        if name == "default" || name.is_empty() {
            return Err(Error::rule(
                &format!("authz.sets.{name}"),
                format!("authz.sets.{name:?}: the name is reserved"),
            ));
        }
        sets.push(parse_set(&name, set, data_dir)?);
    }
    if raw.decision_memo > MAX_MEMO {
        return Err(Error::expected(
            "authz.decision_memo",
            raw.decision_memo.to_string(),
            &format!("0..={MAX_MEMO}"),
        ));
    }
    for set in &mut sets {
        set.memo_capacity = raw.decision_memo as usize;
    }
    let decision_log = match raw.decision_log.as_str() {
        "all" => DecisionLog::All,
        "denied" => DecisionLog::Denied,
        "off" => DecisionLog::Off,
        other => {
            return Err(Error::expected(
                "authz.decision_log",
                format!("{other:?}"),
                "all, denied or off",
            ))
        }
    };
    let decision_log_mode = match raw.decision_log_mode.as_str() {
        "async" => DecisionLogMode::Async,
        "sync" => DecisionLogMode::Sync,
        other => {
            return Err(Error::expected(
                "authz.decision_log_mode",
                format!("{other:?}"),
                "async or sync",
            ))
        }
    };
    Ok(AuthzConfig {
        decision_log,
        decision_log_mode,
        listen,
        listen_unix,
        tls,
        sets,
        deny_status: raw.deny_status as u16,
        decision_budget: std::time::Duration::try_from(budget).map_err(|_| {
            Error::rule(
                "authz.decision_budget",
                "authz.decision_budget is out of range",
            )
        })?,
        input: InputOptions {
            xfcc: raw.xfcc,
            skip_request_body_parse: raw.skip_request_body_parse,
            proto_descriptor: proto_descriptor(&raw.proto_descriptor, data_dir)?,
        },
    })
}
