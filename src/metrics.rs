//! `/metrics`: every library's counters and histogram handles, wired into one
//! `prometheus-client` registry and written in the Prometheus text format (0.0.4). The
//! libraries hold plain atomics and [`esm_histogram::Histogram`]s (recording stays a few
//! atomic adds on the decision path); what is derived from state (the CA's ages and
//! expiries, the checkpoint's age, the audit queue) is read at scrape time.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use esm_audit::writer::Metrics as AuditMetrics;
use esm_ca::material::CaMaterial;
use esm_ca::state::{CaState, Status};
use esm_histogram::Snapshot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio::sync::watch;

/// The `Content-Type` of what [`encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

pub(crate) type Labels = Vec<(&'static str, String)>;

/// One sample's value, in the type its family is written with: integers stay integers
/// (`esm_ca_authorities{status="active"} 2`), as the hand-written exposition had them.
pub(crate) enum Value {
    U(u64),
    I(i64),
    F(f64),
    H(Snapshot),
}

/// Writes one family: its HELP and TYPE, then each sample under its labels. Counter names
/// are given without `_total`; the encoder appends it.
pub(crate) fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let mut s = m.encode_family(&labels)?;
        match (kind, value) {
            (MetricType::Counter, Value::U(v)) => {
                s.encode_counter::<NoLabelSet, _, u64>(&v, None)?
            }
            (MetricType::Counter, Value::F(v)) => {
                s.encode_counter::<NoLabelSet, _, u64>(&v, None)?
            }
            (_, Value::U(v)) => s.encode_gauge(&v)?,
            (_, Value::I(v)) => s.encode_gauge(&v)?,
            (_, Value::F(v)) => s.encode_gauge(&v)?,
            (_, Value::H(h)) => {
                s.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?
            }
        }
    }
    Ok(())
}

pub(crate) fn one(v: Value) -> Vec<(Labels, Value)> {
    vec![(Vec::new(), v)]
}

pub(crate) fn n(v: &AtomicU64) -> Value {
    Value::U(v.load(Relaxed))
}

/// The registry behind `/metrics`.
pub fn registry(
    ca: watch::Receiver<Arc<CaMaterial>>,
    audit: Arc<AuditMetrics>,
    authz: Arc<esm_authz::service::Metrics>,
    agent: Arc<esm_agent::context::AgentMetrics>,
) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Ca(ca)));
    r.register_collector(Box::new(crate::metrics_services::Audit(audit)));
    r.register_collector(Box::new(crate::metrics_services::Authz(authz)));
    r.register_collector(Box::new(crate::metrics_services::Agent(agent)));
    r.register_collector(Box::new(crate::metrics_services::ConfigReloads));
    r.register_collector(Box::new(Listeners));
    r
}

/// The registry's metrics in the Prometheus text format.
pub fn encode(r: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; a collector's error would be a bug in this file.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, r) {
        tracing::error!(error = %e, "metrics could not be encoded");
    }
    out
}

struct Ca(watch::Receiver<Arc<CaMaterial>>);

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca")
    }
}

impl Collector for Ca {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let material = self.0.borrow().clone();
        ca(&mut enc, &material.state, OffsetDateTime::now_utc())
    }
}

/// The CA's families at `now`: the signing CA's and root's expiry, age and time left (a
/// key too old, or a rotation that did not happen), the bundle, the authorities by status.
fn ca(enc: &mut DescriptorEncoder<'_>, state: &CaState, now: OffsetDateTime) -> std::fmt::Result {
    use MetricType::Gauge;
    let version = vec![("version", env!("CARGO_PKG_VERSION").to_owned())];
    family(
        enc,
        "esm_build_info",
        "esm build.",
        Gauge,
        vec![(version, Value::U(1))],
    )?;
    let secs = |d: time::Duration| Value::I(d.whole_seconds());
    for (what, a) in [
        ("signing_ca", state.active_intermediate()),
        ("root", state.active_root()),
    ] {
        let Some(a) = a else { continue };
        let name = |s: &str| format!("esm_ca_{what}_{s}");
        let whose = if what == "root" {
            "the active root"
        } else {
            "the active signing CA"
        };
        family(
            enc,
            &name("expiry_timestamp_seconds"),
            &format!("When {whose} expires."),
            Gauge,
            one(Value::I(a.not_after.unix_timestamp())),
        )?;
        family(
            enc,
            &name("age_seconds"),
            &format!("Age of {whose} and its key (since its notBefore)."),
            Gauge,
            one(secs(now - a.not_before)),
        )?;
        family(
            enc,
            &name("expires_in_seconds"),
            &format!("Time left until {whose} expires; negative once expired."),
            Gauge,
            one(secs(a.not_after - now)),
        )?;
    }
    family(
        enc,
        "esm_ca_bundle_sequence",
        "Sequence number of the trust bundle.",
        Gauge,
        one(Value::U(state.bundle_sequence)),
    )?;
    family(
        enc,
        "esm_ca_bundle_roots",
        "Roots published in the trust bundle.",
        Gauge,
        one(Value::U(state.published_roots(now).len() as u64)),
    )?;
    let count = |s: Status| state.authorities.iter().filter(|a| a.status == s).count() as u64;
    let by_status = [
        ("prepared", Status::Prepared),
        ("active", Status::Active),
        ("retired", Status::Retired),
    ]
    .into_iter()
    .map(|(l, s)| (vec![("status", l.to_owned())], Value::U(count(s))))
    .collect();
    family(
        enc,
        "esm_ca_authorities",
        "Roots and intermediates by status.",
        Gauge,
        by_status,
    )
}

#[derive(Debug)]
struct Listeners;

impl Collector for Listeners {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        listeners(&mut enc, &esm_listener::snapshots())?;
        mtls(&mut enc, &esm_agent::mtls_peers::refusal_counts())
    }
}

/// The mutual-TLS listeners (ext_authz with `authz.tls`, the agent's TCP listener): failed
/// handshakes, and among them the valid SVIDs refused for their SPIFFE ID.
fn mtls(
    enc: &mut DescriptorEncoder<'_>,
    all: &[(&str, esm_agent::mtls_peers::RefusalCounts)],
) -> std::fmt::Result {
    let by = |f: fn(&esm_agent::mtls_peers::RefusalCounts) -> u64| -> Vec<(Labels, Value)> {
        all.iter()
            .map(|(name, c)| (vec![("listener", (*name).to_owned())], Value::U(f(c))))
            .collect()
    };
    family(
        enc,
        "esm_mtls_handshakes_failed",
        "TLS handshakes that failed: no client certificate, one that is not an SVID of this trust domain, a SPIFFE ID the listener does not allow, a client not speaking TLS, or too slow.",
        MetricType::Counter,
        by(|c| c.handshakes_failed),
    )?;
    family(
        enc,
        "esm_mtls_peers_refused",
        "Clients refused in the handshake for their SPIFFE ID (authz.allowed_spiffe_ids), each logged with it.",
        MetricType::Counter,
        by(|c| c.peers_refused),
    )
}

/// The bounded listeners (ext_authz, admin): connections held, refused at a limit, and
/// closed for sending too little too slowly.
fn listeners(
    enc: &mut DescriptorEncoder<'_>,
    all: &[(&str, esm_listener::Snapshot)],
) -> std::fmt::Result {
    use MetricType::{Counter, Gauge};
    let by = |f: fn(&esm_listener::Snapshot) -> u64| -> Vec<(Labels, Value)> {
        all.iter()
            .map(|(name, s)| (vec![("listener", (*name).to_owned())], Value::U(f(s))))
            .collect()
    };
    family(
        enc,
        "esm_listener_connections",
        "Connections held.",
        Gauge,
        by(|s| s.open),
    )?;
    family(
        enc,
        "esm_listener_accepted",
        "Connections accepted within the limits.",
        Counter,
        by(|s| s.accepted),
    )?;
    family(
        enc,
        "esm_listener_stalled",
        "Connections closed because their first bytes did not arrive in time.",
        Counter,
        by(|s| s.stalled),
    )?;
    let refused = all
        .iter()
        .flat_map(|(name, s)| {
            [
                ("listener", s.refused_listener_full),
                ("peer", s.refused_peer_full),
            ]
            .map(|(limit, v)| {
                let labels = vec![
                    ("listener", (*name).to_owned()),
                    ("limit", limit.to_owned()),
                ];
                (labels, Value::U(v))
            })
        })
        .collect();
    family(
        enc,
        "esm_listener_refused",
        "Connections closed at once because the listener or their peer held too many.",
        Counter,
        refused,
    )
}
