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
        // Each crate's error says whether the caller or the configuration is at fault.
        let usage = None
            .or_else(|| {
                cause
                    .downcast_ref::<esm_identity::Error>()
                    .map(|e| e.is_usage_error())
            })
            .or_else(|| {
                cause
                    .downcast_ref::<esm_ca::Error>()
                    .map(|e| e.is_usage_error())
            })
            .or_else(|| {
                cause
                    .downcast_ref::<esm_agent::Error>()
                    .map(|e| e.is_usage_error())
            })
            .or_else(|| {
                cause
                    .downcast_ref::<esm_authz::Error>()
                    .map(|e| e.is_usage_error())
            })
            .or_else(|| {
                cause
                    .downcast_ref::<esm_report::Error>()
                    .map(|e| e.is_usage_error())
            })
            .or_else(|| {
                cause
                    .downcast_ref::<esm_audit::Error>()
                    .map(|e| e.is_usage_error())
            });
        if let Some(usage) = usage {
            return if usage { USAGE } else { FAILURE };
        }
    }
    FAILURE
}
