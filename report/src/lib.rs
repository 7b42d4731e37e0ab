//! esm-report: compliance reports (SOC 2, ISO/IEC 27001, or a framework of your own) from
//! the audit store.
//!
//! Frameworks are data ([`framework`]): controls with esm's own summary of what they ask
//! and the checks that decide them. The checks ([`checks`]) are pure accumulators fed in one
//! streaming pass ([`stream`]) that also verifies the hash chain; [`evaluate`] groups their
//! results into controls, [`render`] writes JSON, Markdown, HTML or OSCAL, and [`seal`]
//! digests the output and ties it to a signed audit checkpoint.

pub mod activity;
pub mod checks;
pub mod error;
pub mod evaluate;
pub mod framework;
pub mod model;
pub mod period;
pub mod render;
pub mod seal;
pub mod stream;

use esm_audit::checkpoint::PublicKey;
use esm_audit::store::Db;

pub use checks::Params;
pub use error::{Error, Result};
pub use framework::Framework;
pub use model::Report;
pub use period::Period;
pub use render::Format;

/// What a report is computed over and labelled with.
pub struct Request {
    pub framework: Framework,
    pub period: Period,
    pub params: Params,
    /// The store as the scope names it (no credentials).
    pub store: String,
    pub esm_version: String,
    pub now_ns: i64,
}

/// Computes the report (digest not yet filled in: see [`seal::sealed`]).
pub async fn generate(db: &Db, key: &PublicKey, req: &Request) -> Result<Report> {
    let out = stream::run(db, key, req.period, &req.params, req.now_ns).await?;
    let controls = evaluate::controls(&req.framework, &out.checks, out.integrity.verified);
    let p = &req.params;
    Ok(Report {
        schema_version: model::SCHEMA_VERSION.into(),
        framework: model::FrameworkInfo {
            id: req.framework.id.clone(),
            name: req.framework.name.clone(),
            version: req.framework.version.clone(),
            source: req.framework.source.clone(),
        },
        period: model::PeriodText {
            from: period::rfc3339(req.period.from_ns),
            to: period::rfc3339(req.period.to_ns),
        },
        generated_at: period::rfc3339(req.now_ns),
        esm_version: req.esm_version.clone(),
        scope: model::Scope {
            store: req.store.clone(),
            trust_domains: out.trust_domains,
            nodes: out.nodes,
            events_in_period: out.events_in_period,
            first_seq: out.first_seq,
            last_seq: out.last_seq,
            parameters: model::Parameters {
                svid_max_ttl_secs: p.svid_max_ttl_secs,
                clock_tolerance_secs: (p.clock_tolerance_ns / period::NS_PER_SEC) as u64,
                checkpoint_every: p.checkpoint_every,
                checkpoint_interval_secs: (p.checkpoint_interval_ns / period::NS_PER_SEC) as u64,
                spike_min_denials: p.spike_min_denials,
                spike_factor: p.spike_factor,
                baseline_hours: p.baseline_hours,
                policies: p.policies.clone(),
            },
        },
        summary: evaluate::summary(&controls),
        integrity: out.integrity,
        controls,
        activity: out.activity,
        digest: String::new(),
    })
}

/// Whether the report fails the run (exit 1).
pub fn fails(r: &Report) -> bool {
    r.summary.result != "pass"
}
