//! The report as data: what every output format renders and what the JSON Schema
//! (`report/schema/report.schema.json`) describes. Field names are part of the interface.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the JSON layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: &str = "esm-report/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    NotApplicable,
    /// Counts as failed: an auditor cannot accept "no evidence" as "no problem".
    InsufficientEvidence,
    /// A person has to decide; does not fail the run.
    Manual,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::NotApplicable => "not_applicable",
            Self::InsufficientEvidence => "insufficient_evidence",
            Self::Manual => "manual",
        }
    }

    /// Whether this status fails the run (exit 1).
    pub fn fails(self) -> bool {
        matches!(self, Self::Failed | Self::InsufficientEvidence)
    }
}

/// One thing that went against a check, with the event that shows it when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub message: String,
}

impl Exception {
    /// The exception as the readable formats list it: `seq N: message`, or the message.
    pub fn line(&self) -> String {
        match self.seq {
            Some(s) => format!("seq {s}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub id: String,
    pub description: String,
    pub status: Status,
    /// What was counted (events examined, exceptions, …); names are per check.
    pub counts: BTreeMap<String, u64>,
    /// Sequence numbers of supporting events, bounded; `esm audit prove SEQ` proves each.
    pub sample: Vec<u64>,
    /// Bounded; `counts.exceptions` has the total.
    pub exceptions: Vec<Exception>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResult {
    pub id: String,
    pub title: String,
    pub statement: String,
    pub status: Status,
    pub checks: Vec<CheckResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    pub id: String,
    pub name: String,
    pub version: String,
    /// `builtin` or the path of the user's file.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodText {
    pub from: String,
    pub to: String,
}

/// A policy version the report could examine, and whether it denies what it does not grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFact {
    pub hash: String,
    pub source: String,
    pub deny_by_default: bool,
}

/// The settings the checks were computed with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameters {
    pub svid_max_ttl_secs: Option<u64>,
    pub clock_tolerance_secs: u64,
    pub checkpoint_every: u64,
    pub checkpoint_interval_secs: u64,
    pub spike_min_denials: u64,
    pub spike_factor: u64,
    pub baseline_hours: u64,
    pub policies: Vec<PolicyFact>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// The store, without credentials.
    pub store: String,
    /// The trust domain(s) CA events name, bounded.
    pub trust_domains: Vec<String>,
    /// The nodes that wrote events in the period, bounded.
    pub nodes: Vec<String>,
    pub events_in_period: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub parameters: Parameters,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointText {
    pub tree_size: u64,
    pub root_hash: String,
    pub last_hash: String,
    pub time: String,
    pub time_ns: i64,
    pub key_id: String,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integrity {
    /// The chain, Merkle roots and signatures verified from the checkpoint before the
    /// period to `checkpoint`, which covers every event of the period.
    pub verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub events_verified: u64,
    pub checkpoint: Option<CheckpointText>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// `pass` when no control failed (exit 0), else `fail` (exit 1).
    pub result: String,
    pub counts: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Day {
    pub date: String,
    pub allow: u64,
    pub deny: u64,
    pub issued: u64,
    pub renewed: u64,
    pub ca_rotations: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub label: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    pub caller: String,
    pub service: String,
    pub allow: u64,
    pub deny: u64,
}

/// What the charts show: per-day counts, SVID lifetimes, the busiest caller→service edges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub days: Vec<Day>,
    pub lifetimes: Vec<Bucket>,
    pub edges: Vec<Edge>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: String,
    pub framework: FrameworkInfo,
    pub period: PeriodText,
    pub generated_at: String,
    pub esm_version: String,
    pub scope: Scope,
    pub integrity: Integrity,
    pub summary: Summary,
    pub controls: Vec<ControlResult>,
    pub activity: Activity,
    /// `sha256:` and 64 hex digits: SHA-256 of the whole output file with these 64 digits
    /// written as zeros (see [`crate::seal`]).
    pub digest: String,
}
