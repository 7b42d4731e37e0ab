//! The agent part of `esm serve`: the registration entries (store and admin socket) and
//! the SDS server on the agent socket, fed by the CA material the rotator publishes.

use std::sync::Arc;

use anyhow::Context;
use esm_agent::context::{AgentContext, AgentMetrics};
use esm_agent::entry_index::EntrySet;
use esm_agent::entry_store::EntryStore;
use esm_ca::material::CaMaterial;
use esm_listener::{GuardedListener, Limits};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit_store::Evidence;
use esm_config::Config;

fn until(stop: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut stop = stop.clone();
    async move {
        let _ = stop.changed().await;
    }
}

/// Starts the admin socket and, when configured, the agent socket.
pub async fn start(
    cfg: &Config,
    ca: watch::Receiver<Arc<CaMaterial>>,
    ca_changed: Arc<tokio::sync::Notify>,
    evidence: &Evidence,
    metrics: Arc<AgentMetrics>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let entries_store = EntryStore::open(&cfg.audit.url, cfg.audit.schema.as_deref())
        .await
        .context("opening the registration entries")?;
    let all = entries_store.list().await?;
    tracing::info!(entries = all.len(), "registration entries loaded");
    // Stored before esm refused them: never served (issuance refuses them), said once here.
    for e in all.iter().filter(|e| e.spiffe_id.is_reserved_for_esm()) {
        tracing::warn!(entry.id = %e.id, spiffe.id = %e.spiffe_id,
            "registration entry grants one of esm's own identities and is never served; delete it");
    }
    let (entries_tx, entries_rx) = watch::channel(Arc::new(EntrySet::new(all)));
    let mut tasks = Vec::new();

    let admin = super::serve::bind_unix("agent.admin_socket", &cfg.agent.admin_socket, 0o600)?;
    let state = Arc::new(crate::admin_api::AdminState {
        store: entries_store,
        entries: entries_tx,
        audit: evidence.sink.clone(),
        ca_changed,
        changes: Arc::default(),
    });
    let shutdown = until(stop);
    tasks.push(tokio::spawn(async move {
        // Each connection carries its peer's credentials: the actor of what it changes.
        let admin = GuardedListener::new(admin, "admin_socket", Limits::admin());
        crate::admin_server::serve(
            admin,
            crate::admin_api::router(state.clone()),
            |conn| axum::extract::ConnectInfo(crate::admin_peer::AdminPeer::of(conn.get_ref())),
            shutdown,
        )
        .await;
        state.store.close().await;
    }));

    if cfg.agent.socket.is_none() && cfg.agent.listen.is_none() {
        return Ok(tasks);
    }
    // Every open stream follows the material the rotator publishes, and pushes each change.
    let ctx = AgentContext::new(
        ca,
        entries_rx,
        cfg.issuance_policy(),
        Some(evidence.sink.clone()),
        metrics,
    );
    if let Some(path) = &cfg.agent.socket {
        let listener = super::serve::bind_unix("agent.socket", path, 0o666)?;
        let (ctx, shutdown) = (ctx.clone(), until(stop));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = esm_agent::server::serve(listener, ctx, shutdown).await {
                tracing::error!(error = %e, "agent socket failed");
            }
        }));
    }
    if let Some(addr) = cfg.agent.listen {
        let listener = super::serve::bind("agent.listen", addr).await?;
        let shutdown = until(stop);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = esm_agent::server::serve_tcp(listener, ctx, shutdown).await {
                tracing::error!(error = %e, "agent TCP listener failed");
            }
        }));
    }
    Ok(tasks)
}
