//! `esm serve`: wires the audit writer, the CA rotator and the admin endpoints, and stops them on SIGTERM or
//! Ctrl-C.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::config::Config;

pub fn run(cfg: Config, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(cfg, env))
}

async fn serve(cfg: Config, env: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let store = Arc::new(super::ca_store(&cfg, env));
    // Fail at start, not at the first request: the state must read and the key must load.
    let state = store.load()?;
    store.signing_ca(&state)?;
    let evidence = crate::evidence::Evidence::start(&cfg).await?;
    let audit_metrics = evidence.sink.metrics().clone();
    let (ca_tx, ca_rx) = watch::channel(Arc::new(state));
    let (stop_tx, stop_rx) = watch::channel(false);

    let listener = tokio::net::TcpListener::bind(cfg.admin_listen)
        .await
        .map_err(|e| crate::exit::usage(format!("admin.listen {}: {e}", cfg.admin_listen)))?;
    tracing::info!(admin.listen = %cfg.admin_listen, trust_domain = %cfg.trust_domain, "esm serving");

    let rotator = tokio::spawn(esm_ca::rotator::run(
        store.clone(),
        cfg.rotation_policy(),
        ca_tx,
        Some(evidence.sink.clone()),
        stop_rx.clone(),
    ));
    let mut admin_stop = stop_rx.clone();
    let admin = tokio::spawn(async move {
        axum::serve(listener, crate::admin::router(ca_rx, audit_metrics))
            .with_graceful_shutdown(async move {
                let _ = admin_stop.changed().await;
            })
            .await
    });

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = rotator.await;
    admin.await?.context("admin server")?;
    // Last: everything above may still have queued events; this drains them and signs a
    // final checkpoint so the tail of the log is covered.
    evidence.shutdown().await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
