//! The decision itself: a pure function from a policy set and a CheckRequest to what Envoy
//! is told. Fail closed: an input that cannot be built, an evaluation error or timeout, an
//! undefined or malformed result all deny. Dry-run allows and reports what would have been.

use envoy_types::ext_authz::v3::pb::CheckRequest;

use crate::decision::{from_result, Decision};
use crate::error::Error;
use crate::input::InputOptions;
use crate::policy_set::PolicySet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    pub input: InputOptions,
    /// Allow everything; the policy's own decision is only reported.
    pub dry_run: bool,
    /// The status of a denial the policy did not set (and of every fail-closed denial).
    pub deny_status: u16,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            input: InputOptions::default(),
            dry_run: false,
            deny_status: 403,
        }
    }
}

/// Why a request was denied without the policy deciding so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The CheckRequest could not be turned into an input.
    Input,
    /// Evaluation failed or ran out of time.
    Evaluation,
    /// The rule was undefined for this input.
    Undefined,
    /// The result was not a boolean or a decision object.
    Result,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Evaluation => "evaluation",
            Self::Undefined => "undefined",
            Self::Result => "result",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// What Envoy is told.
    pub decision: Decision,
    /// What the policy decided (differs from `decision.allowed` only in dry-run).
    pub policy_allowed: bool,
    /// Set when the request was denied because the policy could not decide.
    pub failure: Option<(Failure, String)>,
    /// The result came from the set's decision memo, not a fresh evaluation.
    pub memoized: bool,
}

impl Checked {
    /// Whether the rule was evaluated for this decision (not answered by the memo, not
    /// refused before evaluation).
    pub fn evaluated(&self) -> bool {
        !self.memoized && !matches!(self.failure, Some((Failure::Input, _)))
    }
}

/// A denial (allowed in dry-run) the policy did not make.
pub fn refuse(kind: Failure, reason: String, opts: &CheckOptions) -> Checked {
    Checked {
        decision: Decision {
            allowed: opts.dry_run,
            http_status: Some(opts.deny_status),
            ..Decision::default()
        },
        policy_allowed: false,
        failure: Some((kind, reason)),
        memoized: false,
    }
}

pub fn check(set: &PolicySet, req: &CheckRequest, opts: &CheckOptions) -> Checked {
    let (result, memoized) = match set.decide_request(req, &opts.input) {
        Ok(v) => v,
        Err(e @ Error::Request(_)) => return refuse(Failure::Input, e.to_string(), opts),
        Err(e) => return refuse(Failure::Evaluation, e.to_string(), opts),
    };
    if result == regorus::Value::Undefined {
        return refuse(
            Failure::Undefined,
            format!("{} is undefined", set.rule),
            opts,
        );
    }
    let mut decision = match from_result(&result) {
        Ok(d) => d,
        Err(e) => return refuse(Failure::Result, e.to_string(), opts),
    };
    let policy_allowed = decision.allowed;
    if !decision.allowed && decision.http_status.is_none() {
        decision.http_status = Some(opts.deny_status);
    }
    if opts.dry_run && !decision.allowed {
        decision = Decision {
            allowed: true,
            ..Decision::default()
        };
    }
    Checked {
        decision,
        policy_allowed,
        failure: None,
        memoized,
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
