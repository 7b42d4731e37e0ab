#![allow(clippy::unwrap_used)]
use super::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

const BASE: &str = r#"
trust_domain = "example.org"
[audit]
node = "n1"
[authz]
policy_dir = "policies"
[authz.sets.canary]
policy_dir = "policies-canary"
dry_run = true
"#;

fn cfg(extra: &[(&str, &str)]) -> Config {
    let env: BTreeMap<String, String> = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::parse(BASE, PathBuf::from("/d"), &env).unwrap()
}

#[test]
fn the_same_config_changes_nothing() {
    let p = plan(&cfg(&[]), &cfg(&[]));
    assert!(p.is_empty());
    assert!(p.sets.is_empty());
}

#[test]
fn authz_settings_and_policy_sets_apply_live() {
    let new = cfg(&[
        ("ESM_AUTHZ_DENY_STATUS", "401"),
        ("ESM_AUTHZ_DECISION_LOG", "denied"),
        ("ESM_AUTHZ_RULE", "data.other.allow"),
        ("ESM_AUTHZ_POLICY_DIR", "policies-v2"),
    ]);
    let p = plan(&cfg(&[]), &new);
    assert_eq!(
        p.live,
        vec![
            "authz.deny_status",
            "authz.decision_log",
            "authz.policy_dir",
            "authz.rule"
        ]
    );
    assert!(p.restart.is_empty());
    assert_eq!(p.sets, vec!["default"]);
}

#[test]
fn a_named_sets_dry_run_is_named_by_its_own_key() {
    let old = cfg(&[]);
    let mut new = cfg(&[]);
    new.authz.sets[1].dry_run = false;
    let p = plan(&old, &new);
    assert_eq!(p.live, vec!["authz.sets.canary.dry_run"]);
    assert_eq!(p.sets, vec!["canary"]);
}

#[test]
fn the_memo_size_recompiles_every_set() {
    let p = plan(&cfg(&[]), &cfg(&[("ESM_AUTHZ_DECISION_MEMO", "10")]));
    assert_eq!(p.live, vec!["authz.decision_memo"]);
    assert_eq!(p.sets, vec!["default", "canary"]);
}

#[test]
fn listeners_store_and_ca_keys_wait_for_a_restart() {
    let new = cfg(&[
        ("ESM_ADMIN_LISTEN", "127.0.0.1:1"),
        ("ESM_AUTHZ_LISTEN", "127.0.0.1:2"),
        ("ESM_AUDIT_URL", "sqlite://other.db"),
        ("ESM_CA_SVID_MAX_TTL", "12h"),
        ("ESM_AGENT_SOCKET", "other.sock"),
        ("ESM_AUTHZ_XFCC", "true"),
    ]);
    let p = plan(&cfg(&[]), &new);
    assert_eq!(
        p.restart,
        vec![
            "ca.svid_max_ttl",
            "admin.listen",
            "audit.url",
            "agent.socket",
            "authz.listen"
        ]
    );
    assert_eq!(p.live, vec!["authz.xfcc"]);
    assert_eq!(
        p.changed(),
        vec![
            "admin.listen",
            "agent.socket",
            "audit.url",
            "authz.listen",
            "authz.xfcc",
            "ca.svid_max_ttl"
        ]
    );
}

#[test]
fn adding_or_removing_a_set_waits_for_a_restart() {
    let old = cfg(&[]);
    let mut new = cfg(&[]);
    let mut extra = new.authz.sets[1].clone();
    extra.name = "beta".into();
    new.authz.sets.push(extra);
    new.authz.sets.remove(1);
    let p = plan(&old, &new);
    assert_eq!(p.restart, vec!["authz.sets.beta", "authz.sets.canary"]);
    assert!(p.live.is_empty() && p.sets.is_empty());
}

#[test]
fn the_otlp_endpoint_takes_a_restart() {
    let new = cfg(&[("ESM_TELEMETRY_OTLP_ENDPOINT", "http://127.0.0.1:4317")]);
    let p = plan(&cfg(&[]), &new);
    assert_eq!(p.restart, vec!["telemetry.otlp_endpoint"]);
    assert!(p.live.is_empty());
}

#[test]
fn turning_authz_tls_on_or_changing_its_allowed_ids_waits_for_a_restart() {
    let off = cfg(&[]);
    let on = cfg(&[("ESM_AUTHZ_TLS", "true")]);
    let listed = |id: &str| {
        cfg(&[
            ("ESM_AUTHZ_TLS", "true"),
            ("ESM_AUTHZ_ALLOWED_SPIFFE_IDS", id),
        ])
    };
    assert_eq!(plan(&off, &on).restart, vec!["authz.tls"]);
    assert_eq!(plan(&on, &off).restart, vec!["authz.tls"]);
    let p = plan(
        &listed("spiffe://example.org/a"),
        &listed("spiffe://example.org/b"),
    );
    assert_eq!(p.restart, vec!["authz.allowed_spiffe_ids"]);
    assert!(p.live.is_empty());
    assert!(plan(&on, &on).is_empty());
}
