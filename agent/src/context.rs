//! What every agent stream shares: the signing CA and bundle (swapped on rotation), the
//! registration entries (swapped on every change), the issuance policy, the audit sink and
//! the SVIDs held.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use esm_audit::writer::AuditSink;
use esm_histogram::{Histogram, PUSH};
use tokio::sync::watch;

use esm_ca::issuer::IssuancePolicy;
use esm_ca::material::CaMaterial;

use super::entry::{Entry, Selector};
use super::entry_index::EntrySet;
use super::peer_process::PeerBinding;
use super::svid_cache::SvidCache;

/// Counters for `/metrics`.
#[derive(Debug)]
pub struct AgentMetrics {
    pub open_streams: AtomicU64,
    pub responses: AtomicU64,
    pub nacks: AtomicU64,
    pub refused: AtomicU64,
    /// Calls refused because their uid held its stream budget (`stream_limits`).
    pub streams_refused: AtomicU64,
    pub svids_issued: AtomicU64,
    /// Issuances that failed on the CA's side (a key backend down, an expired signing CA);
    /// each is retried, and no workload is refused for it.
    pub issuance_failures: AtomicU64,
    /// From an SDS stream seeing a CA change (rotation, a root prepared or retired) to the
    /// response that carries it: how long Envoys run on the old material.
    pub sds_push_after_ca_change: Histogram,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self {
            open_streams: AtomicU64::default(),
            responses: AtomicU64::default(),
            nacks: AtomicU64::default(),
            refused: AtomicU64::default(),
            streams_refused: AtomicU64::default(),
            svids_issued: AtomicU64::default(),
            issuance_failures: AtomicU64::default(),
            sds_push_after_ca_change: Histogram::new(PUSH),
        }
    }
}

#[derive(Clone)]
pub struct AgentContext {
    pub ca: watch::Receiver<Arc<CaMaterial>>,
    pub entries: watch::Receiver<Arc<EntrySet>>,
    pub policy: IssuancePolicy,
    pub audit: Option<AuditSink>,
    pub metrics: Arc<AgentMetrics>,
    /// The SVIDs held, one per identity, shared by every stream.
    pub svids: Arc<SvidCache>,
}

impl AgentContext {
    pub fn new(
        ca: watch::Receiver<Arc<CaMaterial>>,
        entries: watch::Receiver<Arc<EntrySet>>,
        policy: IssuancePolicy,
        audit: Option<AuditSink>,
        metrics: Arc<AgentMetrics>,
    ) -> Self {
        let svids = SvidCache::new(ca.clone(), policy, audit.clone(), metrics.clone());
        Self {
            ca,
            entries,
            policy,
            audit,
            metrics,
            svids,
        }
    }
}

/// Who is on the other end of a stream, as attested.
#[derive(Debug, Clone)]
pub struct Caller {
    pub selectors: BTreeSet<Selector>,
    /// How the audit log names the caller, e.g. `unix:uid:1000:pid:42`.
    pub actor: String,
    /// On the Unix socket, the process pinned at accept, looked at again before every
    /// answer a stream sends ([`Caller::recheck`]).
    pub peer: Option<Arc<PeerBinding>>,
}

impl Caller {
    /// Attests a Unix-socket caller again (its selectors may have changed, e.g. its
    /// executable's path now names another file); refused when the process that connected
    /// has exited or exec'd since. A caller attested by certificate is left as it is.
    pub fn recheck(&mut self) -> Result<(), tonic::Status> {
        if let Some(peer) = &self.peer {
            self.selectors = peer.check()?;
        }
        Ok(())
    }

    /// The caller's entries in the current set, found through its selector index.
    pub fn entries<'a>(&self, all: &'a EntrySet) -> Vec<&'a Entry> {
        all.matching(&self.selectors)
    }
}
