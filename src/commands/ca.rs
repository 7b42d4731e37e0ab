//! `esm ca rotate` and `esm ca show`.

use std::collections::BTreeMap;

use esm_ca::rotation::Step;

use crate::cli::RotateStep;
use esm_config::Config;

pub fn rotate(
    cfg: &Config,
    env: &BTreeMap<String, String>,
    step: Option<RotateStep>,
    root: bool,
) -> anyhow::Result<()> {
    let force = step.map(|s| match (s, root) {
        (RotateStep::Prepare, false) => Step::PrepareIntermediate,
        (RotateStep::Activate, false) => Step::ActivateIntermediate,
        (RotateStep::Prepare, true) => Step::PrepareRoot,
        (RotateStep::Activate, true) => Step::ActivateRoot,
    });
    if root && force.is_none() {
        return Err(crate::exit::usage(
            "--root needs a step: prepare or activate",
        ));
    }
    let store = super::ca_store(cfg, env)?;
    let now = time::OffsetDateTime::now_utc();
    let (state, done) = store.rotate(&cfg.rotation_policy(), now, force)?;
    if !done.is_empty() {
        tell_server(cfg);
    }
    let actor = crate::audit_store::cli_actor();
    let custody = if done.is_empty() {
        serde_json::Value::Null
    } else {
        store.key_custody(&state)?
    };
    let events = done
        .iter()
        .map(|step| esm_ca::audit_events::ca_rotated(*step, &state, &custody, &actor, now))
        .collect::<Vec<_>>();
    if !events.is_empty() {
        crate::audit_store::record_now(cfg, env, events)?;
    }
    if done.is_empty() {
        println!("nothing is due");
    }
    for step in done {
        println!("done: {step:?}");
    }
    print_state(&state);
    Ok(())
}

/// Tells an `esm serve` running on this data dir that the CA state changed, so its streams
/// get the new bundle at once rather than at its next poll. Nobody listening (no server) is
/// not an error: the state on disk is what counts, and a server started later reads it.
fn tell_server(cfg: &Config) {
    let socket = &cfg.agent.admin_socket;
    if !socket.exists() {
        return;
    }
    let timeout = std::time::Duration::from_secs(2);
    match super::entry::call_within(socket, "POST", "/v1/ca/changed", None, timeout) {
        Ok((204, _)) => tracing::debug!("the running server re-reads the CA state now"),
        Ok((status, body)) => {
            tracing::debug!(status, body = %body.trim(), "the running server was not told")
        }
        Err(e) => tracing::debug!(error = %e, "no running server told of the rotation"),
    }
}

/// Needs no PIN: where keys live is read from the configuration and the CA state.
pub fn show(cfg: &Config, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let _ = env;
    let state = esm_ca::store::CaStore::new(
        cfg.ca_dir(),
        std::sync::Arc::new(esm_ca::key_backend::file::FileKeyStore::new(
            cfg.ca_dir().join("keys"),
            None,
        )),
    )
    .load()?;
    print_state(&state);
    for line in super::key_backends::describe(cfg) {
        println!("{line}");
    }
    if let Some(at) = esm_ca::rotation::next_due_at(&state, &cfg.rotation_policy()) {
        println!("next rotation step due at {}", esm_ca::rfc3339(at));
    }
    Ok(())
}

fn print_state(state: &esm_ca::state::CaState) {
    println!(
        "trust domain {} · bundle sequence {}",
        state.trust_domain, state.bundle_sequence
    );
    for a in &state.authorities {
        println!(
            "  {:<26} {:<12} {:<8} {:<8} {:<7} {} → {}{}",
            a.id,
            format!("{:?}", a.kind).to_lowercase(),
            format!("{:?}", a.status).to_lowercase(),
            a.algorithm,
            a.key_backend,
            esm_ca::rfc3339(a.not_before),
            esm_ca::rfc3339(a.not_after),
            if a.upstream { " (upstream)" } else { "" }
        );
    }
}
