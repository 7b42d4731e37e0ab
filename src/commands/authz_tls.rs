//! The ext_authz TCP listener over mutual TLS (`authz.tls`). esm presents its own SVID
//! `spiffe://<td>/esm/authz`, held in an SVID cache of its own and renewed like the agent
//! listener's; a client must present an SVID that chains to the CA's current bundle and
//! whose SPIFFE ID `authz.allowed_spiffe_ids` admits, or its handshake fails (logged with
//! its `spiffe.id`, counted in `esm_mtls_peers_refused_total`) and none of its requests is
//! ever decided. The connections are bounded like the plain port's.

use std::sync::Arc;

use anyhow::Context;
use esm_agent::context::AgentMetrics;
use esm_agent::mtls::{AllowedPeers, Credentials, Listener};
use esm_agent::subscriptions::Subscriptions;
use esm_agent::svid_cache::SvidCache;
use esm_authz::service::AuthzService;
use esm_ca::issuer::OwnIdentity;
use esm_ca::material::CaMaterial;
use esm_config::authz_tls::AuthzTls;
use esm_config::Config;
use esm_listener::{GuardedListener, Limits};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit_store::Evidence;

/// The CA material and the cache that holds the listener's SVID; nothing is issued until
/// the listener starts.
pub(super) struct OwnSvids {
    ca: watch::Receiver<Arc<CaMaterial>>,
    svids: Arc<SvidCache>,
}

impl OwnSvids {
    pub(super) fn new(
        cfg: &Config,
        evidence: &Evidence,
        ca: watch::Receiver<Arc<CaMaterial>>,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        let svids = SvidCache::new(
            ca.clone(),
            cfg.issuance_policy(),
            Some(evidence.sink.clone()),
            metrics,
        );
        Self { ca, svids }
    }
}

/// Waits for the listener's first SVID (a CA that cannot issue one stops `serve` from
/// starting), then serves Check on `listener` over mutual TLS until `shutdown`.
pub(super) async fn start(
    listener: tokio::net::TcpListener,
    service: AuthzService,
    tls: &AuthzTls,
    own: &OwnSvids,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<JoinHandle<()>> {
    let spec = Listener {
        name: "ext_authz",
        own: OwnIdentity::Authz,
        peers: Some(AllowedPeers::new(tls.allowed_spiffe_ids.iter().cloned())),
    };
    let mut subs = Subscriptions::default();
    let creds = Credentials::new(&own.svids, &own.ca, spec, &mut subs)
        .await
        .context("issuing the ext_authz listener's certificate")?;
    let renew = tokio::spawn(creds.clone().run(own.ca.clone(), subs));
    let allowed: Vec<&str> = tls.allowed_spiffe_ids.iter().map(|i| i.as_str()).collect();
    tracing::info!(authz.listen = ?listener.local_addr().ok(), authz.allowed_spiffe_ids = ?allowed,
        "ext_authz serving over mTLS (an empty list admits any SVID of the trust domain)");
    let guarded = GuardedListener::new(listener, "ext_authz", Limits::grpc());
    let incoming = esm_agent::mtls::incoming(guarded, creds);
    Ok(tokio::spawn(async move {
        if let Err(e) = esm_authz::service::serve_incoming(incoming, service, shutdown).await {
            tracing::error!(error = %e, "ext_authz server failed");
        }
        renew.abort();
    }))
}
