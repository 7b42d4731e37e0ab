//! Exit codes: 0 success, 1 a failure was found (or an operation failed), 2 usage or
//! configuration error.

use std::fmt;

pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;

/// Marks an error as the caller's or the configuration's fault (exit 2).
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

pub fn code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<Usage>().is_some() {
            return USAGE;
        }
        if let Some(ca) = cause.downcast_ref::<esm_ca::Error>() {
            return if ca.is_usage_error() { USAGE } else { FAILURE };
        }
        if let Some(agent) = cause.downcast_ref::<esm_agent::Error>() {
            return if agent.is_usage_error() {
                USAGE
            } else {
                FAILURE
            };
        }
        if let Some(id) = cause.downcast_ref::<esm_identity::Error>() {
            return if id.is_usage_error() { USAGE } else { FAILURE };
        }
        if let Some(authz) = cause.downcast_ref::<esm_authz::Error>() {
            return if authz.is_usage_error() {
                USAGE
            } else {
                FAILURE
            };
        }
        if let Some(report) = cause.downcast_ref::<esm_report::Error>() {
            return if report.is_usage_error() {
                USAGE
            } else {
                FAILURE
            };
        }
        if let Some(audit) = cause.downcast_ref::<esm_audit::Error>() {
            return if audit.is_usage_error() {
                USAGE
            } else {
                FAILURE
            };
        }
    }
    FAILURE
}
