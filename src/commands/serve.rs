//! `esm serve`: wires the audit writer, the CA rotator, the ext_authz server with its policy
//! reload, and the admin endpoints, reloads esm.toml on SIGHUP ([`super::serve_reload`]), and
//! stops them on SIGTERM or Ctrl-C.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use esm_authz::check::CheckOptions;
use esm_authz::service::{AuthzService, Metrics as AuthzMetrics, ServedSet};
use esm_listener::{GuardedListener, Limits};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::authz_tls::OwnSvids;
use super::serve_reload::{AuthzHandles, Reloader, SetHandle};
use crate::audit_store::Evidence;
use esm_config::Config;

pub fn run(
    path: std::path::PathBuf,
    cfg: Config,
    env: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(path, cfg, env))
}

pub(super) async fn bind(
    what: &str,
    addr: std::net::SocketAddr,
) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| crate::exit::usage(format!("{what} {addr}: {e}")))
}

async fn serve(
    path: std::path::PathBuf,
    cfg: Config,
    env: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    crate::data_dir_modes::warn_if_loose(&cfg);
    // First, so that the spans of everything below are exported; restart-only.
    let traces = match &cfg.telemetry.otlp_endpoint {
        Some(endpoint) => Some(
            crate::trace_export::start(endpoint, &cfg.audit.node)
                .map_err(|e| crate::exit::usage(format!("{e:#}")))?,
        ),
        None => None,
    };
    let store = Arc::new(super::ca_store(&cfg, env)?);
    // Fail at start, not at the first request: the state must read and the key must load.
    let state = store.load()?;
    let material =
        esm_ca::material::CaMaterial::load(&store, &state, time::OffsetDateTime::now_utc())?;
    let admin_listener = bind("admin.listen", cfg.admin_listen).await?;
    let evidence = Evidence::start(&cfg, env).await?;
    let (ca_tx, ca_rx) = watch::channel(Arc::new(material));
    let (stop_tx, stop_rx) = watch::channel(false);
    // `esm ca rotate` tells the running server through the admin socket; the rotator then
    // re-reads the state at once instead of at its next poll.
    let ca_changed = Arc::new(tokio::sync::Notify::new());
    tracing::info!(admin.listen = %cfg.admin_listen, trust_domain = %cfg.trust_domain, "esm serving");

    let rotator = tokio::spawn(esm_ca::rotator::run(
        store.clone(),
        cfg.rotation_policy(),
        ca_tx,
        Some(evidence.sink.clone()),
        ca_changed.clone(),
        stop_rx.clone(),
    ));
    let authz_metrics = Arc::new(AuthzMetrics::default());
    let agent_metrics = Arc::new(esm_agent::context::AgentMetrics::default());
    let own = OwnSvids::new(&cfg, &evidence, ca_rx.clone(), agent_metrics.clone());
    let (authz, authz_handles) =
        start_authz(&cfg, &evidence, authz_metrics.clone(), &stop_rx, &own).await?;
    let agent = super::agent::start(
        &cfg,
        ca_rx.clone(),
        ca_changed,
        &evidence,
        agent_metrics.clone(),
        &stop_rx,
    )
    .await?;
    let router = crate::admin::router(
        ca_rx,
        evidence.sink.metrics().clone(),
        authz_metrics,
        agent_metrics,
    );
    let mut admin_stop = stop_rx.clone();
    let admin = tokio::spawn(async move {
        let admin = GuardedListener::new(admin_listener, "admin", Limits::admin());
        crate::admin_server::serve(admin, router, |_| (), async move {
            let _ = admin_stop.changed().await;
        })
        .await;
    });

    let mut reloader = Reloader::new(path, env, cfg, authz_handles, evidence.sink.clone());
    shutdown_signal(&mut reloader).await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = rotator.await;
    admin.await.context("admin server")?;
    drain(authz.into_iter().chain(agent).collect()).await?;
    // Last: everything above may still have queued events; this drains them and signs a
    // final checkpoint so the tail of the log is covered.
    let audited = evidence.shutdown().await;
    // After the audit queue's last commit, so that its span goes too.
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    audited
}

/// How long open connections get to finish after SIGTERM. Envoy keeps its SDS streams open
/// for as long as it runs, so a graceful shutdown that waited for them would never end: a
/// service manager would SIGKILL esm before the audit queue is drained and the final
/// checkpoint signed. Well inside the 30 s that deploy/ gives esm to stop.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits for the servers to finish their open requests, at most `DRAIN`; then closes what
/// is still open (SDS streams). Decisions already made are in the audit queue either way.
async fn drain(tasks: Vec<JoinHandle<()>>) -> anyhow::Result<()> {
    let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
    let all = async move {
        for task in tasks {
            task.await?;
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(DRAIN, all).await {
        Ok(done) => done,
        Err(_) => {
            tracing::warn!(
                drain.secs = DRAIN.as_secs(),
                "connections still open after the drain period (SDS streams); closing them"
            );
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
            Ok(())
        }
    }
}

/// Loads and tests every policy set (a broken one stops `serve` from starting), then runs
/// the ext_authz server (TCP, over mutual TLS with `authz.tls`, and/or Unix socket) and
/// each set's reload until `stop`.
/// Returns the tasks, and what a config reload reaches (none when ext_authz is off).
async fn start_authz(
    cfg: &Config,
    evidence: &Evidence,
    metrics: Arc<AuthzMetrics>,
    stop: &watch::Receiver<bool>,
    own: &OwnSvids,
) -> anyhow::Result<(Vec<JoinHandle<()>>, Option<AuthzHandles>)> {
    let a = &cfg.authz;
    if a.listen.is_none() && a.listen_unix.is_none() {
        return Ok((Vec::new(), None));
    }
    let mut handles = Vec::new();
    esm_authz::policy_set::set_decision_budget(a.decision_budget);
    let mut tasks = Vec::new();
    let mut served = Vec::new();
    for spec in &a.sets {
        // A set fed by a bundle server and never run before has nothing persisted yet.
        let s = spec.clone();
        tokio::task::spawn_blocking(move || esm_authz::bundle_service::first_download(&s))
            .await?
            .map_err(|e| anyhow::anyhow!("policy set {}: {e}", spec.name))?;
        let (set, files) = esm_authz::reload::validate_read(spec)
            .map_err(|e| crate::exit::usage(format!("policy set {}: {e}", spec.name)))?;
        esm_authz::reload_counts::serving(&spec.name, &set.hash, &set.revision);
        tracing::info!(policy.set = %spec.name, policy.hash = %set.hash, policy.rule = %set.rule, dry_run = spec.dry_run, "policy loaded");
        esm_authz::reload::log_engine(&spec.name, &set);
        let (policy_tx, policy_rx) = watch::channel(Arc::new(set));
        let (spec_tx, spec_rx) = watch::channel(Arc::new(spec.clone()));
        let wake = Arc::new(tokio::sync::Notify::new());
        let control = esm_authz::reload::Control {
            spec: spec_rx,
            wake: wake.clone(),
        };
        // The reload task and a config reload both send on it; the task gets a clone.
        let policies = policy_tx.clone();
        handles.push(SetHandle {
            name: spec.name.clone(),
            spec: spec_tx,
            policies,
            wake: wake.clone(),
        });
        // Every set gets its poller: one without a bundle server waits for a config reload
        // that gives it one.
        tasks.push(tokio::spawn(esm_authz::bundle_service::run(
            control.spec.clone(),
            wake.clone(),
            Some(evidence.sink.clone()),
            stop.clone(),
        )));
        tasks.push(tokio::spawn(esm_authz::reload::run(
            control,
            policy_tx,
            Some(files),
            Some(evidence.sink.clone()),
            stop.clone(),
        )));
        served.push(ServedSet {
            name: spec.name.clone(),
            dry_run: spec.dry_run,
            policies: policy_rx,
        });
    }
    let opts = CheckOptions {
        input: a.input.clone(),
        dry_run: false,
        deny_status: a.deny_status,
    };
    let service = AuthzService::new(served, opts, Some(evidence.sink.clone()), metrics)
        .with_decision_log(a.decision_log)
        .with_decision_log_mode(a.decision_log_mode);
    let until_stop = |stop: &watch::Receiver<bool>| {
        let mut stop = stop.clone();
        async move {
            let _ = stop.changed().await;
        }
    };
    if let Some(addr) = a.listen {
        let listener = bind("authz.listen", addr).await?;
        let (svc, shutdown) = (service.clone(), until_stop(stop));
        if let Some(tls) = &a.tls {
            tasks.push(super::authz_tls::start(listener, svc, tls, own, shutdown).await?);
        } else {
            tasks.push(tokio::spawn(async move {
                if let Err(e) = esm_authz::service::serve(listener, svc, shutdown).await {
                    tracing::error!(error = %e, "ext_authz server failed");
                }
            }));
        }
    }
    if let Some(path) = &a.listen_unix {
        let listener = bind_unix("authz.listen_unix", path, 0o660)?;
        let (svc, shutdown) = (service.clone(), until_stop(stop));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = esm_authz::service::serve_unix(listener, svc, shutdown).await {
                tracing::error!(error = %e, "ext_authz server failed");
            }
        }));
    }
    let handles = AuthzHandles {
        service,
        sets: handles,
    };
    Ok((tasks, Some(handles)))
}

/// Binds a Unix socket at `path` with `mode`, replacing a stale socket left by a process
/// that died; a path that exists and is not a socket is a configuration error.
pub(super) fn bind_unix(
    what: &str,
    path: &std::path::Path,
    mode: u32,
) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(crate::exit::usage(format!(
                "{what} {}: exists and is not a socket",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(crate::exit::usage(format!(
                "{what} {}: another process is serving on it",
                path.display()
            )));
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    if mode & 0o066 != 0 {
        let listener = tokio::net::UnixListener::bind(path)
            .map_err(|e| crate::exit::usage(format!("{what} {}: {e}", path.display())))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        return Ok(listener);
    }
    // An owner-only socket (the admin API) is bound in an owner-only directory beside it,
    // given its mode there and only then moved into place: bound where it is, it would
    // exist for a moment with the mode the umask gives, in a data dir other users can
    // enter. (A short name: a socket path has at most 107 bytes.)
    let staging = path.with_file_name(format!(".esm{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    esm_ca::store::create_private_dir(&staging)?;
    let staged = staging.join("s");
    let bound = (|| {
        let listener = tokio::net::UnixListener::bind(&staged)
            .map_err(|e| crate::exit::usage(format!("{what} {}: {e}", path.display())))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        std::fs::rename(&staged, path).with_context(|| format!("binding {}", path.display()))?;
        anyhow::Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    bound
}

/// Waits for SIGTERM or Ctrl-C; each SIGHUP meanwhile reloads esm.toml and re-reads the
/// policies ([`Reloader::hangup`]).
async fn shutdown_signal(reloader: &mut Reloader) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        // Handled, not left to its default action, which would end esm without draining.
        let mut hangup = signal(SignalKind::hangup()).ok();
        match signal(SignalKind::terminate()) {
            Ok(mut term) => loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = term.recv() => break,
                    Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => None } } => {
                        reloader.hangup().await;
                    }
                }
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloader;
        let _ = tokio::signal::ctrl_c().await;
    }
}
