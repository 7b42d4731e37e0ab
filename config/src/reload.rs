//! What a reload of esm.toml (SIGHUP) changes: a pure comparison of the config in force with
//! the one just read, tested without I/O. `serve` applies what can change live (the
//! ext_authz settings and the policy sets esm already serves) and lists the rest, which takes
//! effect at the next start: listeners are bound, the audit store and the CA's keys are open
//! and the agent's caches are built once, and swapping them under running streams would
//! change more than the operator asked for.

use std::fmt::Debug;

use esm_authz::source::SetSpec;

use crate::authz::AuthzConfig;
use crate::Config;

/// The outcome of comparing two configs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Keys whose new values are applied now.
    pub live: Vec<String>,
    /// Keys that changed but take effect at the next start.
    pub restart: Vec<String>,
    /// Names of the served policy sets whose spec changed: read, compiled and tested under
    /// the new spec, and swapped only if every one passes.
    pub sets: Vec<String>,
}

impl Plan {
    /// Every changed key, applied or not.
    pub fn changed(&self) -> Vec<String> {
        let mut all: Vec<String> = self.live.iter().chain(&self.restart).cloned().collect();
        all.sort();
        all
    }

    /// True when the new config applies with no effect now.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.restart.is_empty()
    }
}

/// Compares by what the values say. Config types hold keys and paths that have no `Eq`;
/// their `Debug` text names every field, and is only compared here, never shown.
fn differs<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// `authz.KEY` for the default set, `authz.sets.NAME.KEY` for the others.
fn set_key(set: &str, key: &str) -> String {
    if set == "default" {
        format!("authz.{key}")
    } else {
        format!("authz.sets.{set}.{key}")
    }
}

/// The keys of one set that differ.
fn set_changes(old: &SetSpec, new: &SetSpec) -> Vec<String> {
    let mut out = Vec::new();
    let name = &new.name;
    if old.source.path() != new.source.path() {
        out.push(set_key(name, "policy_dir"));
    } else if differs(&old.source, &new.source) {
        out.push(set_key(name, "bundle_key"));
    }
    if old.rule != new.rule {
        out.push(set_key(name, "rule"));
    }
    if old.dry_run != new.dry_run {
        out.push(set_key(name, "dry_run"));
    }
    // The token is not in RemoteBundle's Debug; a new one is a change all the same.
    let server = |s: &SetSpec| {
        s.remote
            .as_ref()
            .map(|r| (format!("{r:?}"), r.token.clone()))
    };
    if server(old) != server(new) {
        out.push(set_key(name, "bundle_url"));
    }
    if differs(&old.jwt_keys, &new.jwt_keys) {
        out.push(set_key(name, "jwks"));
    }
    out
}

fn authz_plan(old: &AuthzConfig, new: &AuthzConfig, plan: &mut Plan) {
    let restart = [
        ("authz.listen", differs(&old.listen, &new.listen)),
        ("authz.listen_unix", old.listen_unix != new.listen_unix),
        ("authz.tls", old.tls.is_some() != new.tls.is_some()),
        (
            "authz.allowed_spiffe_ids",
            old.tls.is_some() && new.tls.is_some() && old.tls != new.tls,
        ),
    ];
    let live = [
        ("authz.deny_status", old.deny_status != new.deny_status),
        (
            "authz.decision_budget",
            old.decision_budget != new.decision_budget,
        ),
        ("authz.xfcc", old.input.xfcc != new.input.xfcc),
        (
            "authz.skip_request_body_parse",
            old.input.skip_request_body_parse != new.input.skip_request_body_parse,
        ),
        (
            "authz.proto_descriptor",
            old.input.proto_descriptor != new.input.proto_descriptor,
        ),
        ("authz.decision_log", old.decision_log != new.decision_log),
        (
            "authz.decision_log_mode",
            old.decision_log_mode != new.decision_log_mode,
        ),
    ];
    plan.restart
        .extend(restart.iter().filter(|k| k.1).map(|k| k.0.to_owned()));
    plan.live
        .extend(live.iter().filter(|k| k.1).map(|k| k.0.to_owned()));
    let memo = |c: &AuthzConfig| c.sets.first().map(|s| s.memo_capacity);
    let memo_changed = memo(old) != memo(new);
    if memo_changed {
        plan.live.push("authz.decision_memo".into());
    }
    // Sets esm serves keep their place; adding or removing one changes the routes' targets
    // and starts or stops a reload task: that waits for the next start.
    for new_set in &new.sets {
        match old.sets.iter().find(|s| s.name == new_set.name) {
            None => plan.restart.push(format!("authz.sets.{}", new_set.name)),
            Some(old_set) => {
                let keys = set_changes(old_set, new_set);
                if !keys.is_empty() || memo_changed {
                    plan.sets.push(new_set.name.clone());
                }
                plan.live.extend(keys);
            }
        }
    }
    for old_set in &old.sets {
        if !new.sets.iter().any(|s| s.name == old_set.name) {
            plan.restart.push(format!("authz.sets.{}", old_set.name));
        }
    }
}

/// What changes from `old` to `new`, and when.
pub fn plan(old: &Config, new: &Config) -> Plan {
    let mut plan = Plan::default();
    let (a, b) = (&old.ca, &new.ca);
    let restart = [
        ("trust_domain", old.trust_domain != new.trust_domain),
        ("ca.key_backend", a.key_backends != b.key_backends),
        ("ca.key_algorithm", a.key_algorithm != b.key_algorithm),
        (
            "ca.svid_key_algorithm",
            a.svid_key_algorithm != b.svid_key_algorithm,
        ),
        ("ca.root_ttl", a.root_ttl != b.root_ttl),
        (
            "ca.intermediate_ttl",
            a.intermediate_ttl != b.intermediate_ttl,
        ),
        (
            "ca.svid_default_ttl",
            a.svid_default_ttl != b.svid_default_ttl,
        ),
        ("ca.svid_max_ttl", a.svid_max_ttl != b.svid_max_ttl),
        (
            "ca.key_passphrase_env",
            a.key_passphrase_env != b.key_passphrase_env,
        ),
        (
            "ca.azure_key_vault",
            differs(&a.azure_key_vault, &b.azure_key_vault),
        ),
        ("admin.listen", old.admin_listen != new.admin_listen),
        (
            "telemetry.log_format",
            old.telemetry.log_format != new.telemetry.log_format,
        ),
        // The exporter and the layer's tracer are set once, at start.
        (
            "telemetry.otlp_endpoint",
            old.telemetry.otlp_endpoint != new.telemetry.otlp_endpoint,
        ),
        ("audit.url", old.audit.url != new.audit.url),
        ("audit.schema", old.audit.schema != new.audit.schema),
        (
            "audit.queue_full",
            differs(&old.audit.on_full, &new.audit.on_full),
        ),
        (
            "audit.queue_capacity",
            old.audit.queue_capacity != new.audit.queue_capacity,
        ),
        (
            "audit.checkpoint_every",
            old.audit.checkpoint_every != new.audit.checkpoint_every,
        ),
        (
            "audit.checkpoint_interval",
            old.audit.checkpoint_interval != new.audit.checkpoint_interval,
        ),
        (
            "audit.writer_nice",
            old.audit.writer_nice != new.audit.writer_nice,
        ),
        ("audit.node", old.audit.node != new.audit.node),
        ("agent.socket", old.agent.socket != new.agent.socket),
        ("agent.listen", old.agent.listen != new.agent.listen),
        (
            "agent.admin_socket",
            old.agent.admin_socket != new.agent.admin_socket,
        ),
    ];
    plan.restart
        .extend(restart.iter().filter(|k| k.1).map(|k| k.0.to_owned()));
    // Agent keys beyond the listeners (limits, attestation): compared as a whole.
    if plan.restart.iter().all(|k| !k.starts_with("agent.")) && differs(&old.agent, &new.agent) {
        plan.restart.push("agent".into());
    }
    authz_plan(&old.authz, &new.authz, &mut plan);
    plan
}

#[cfg(test)]
#[path = "reload_tests.rs"]
mod tests;
