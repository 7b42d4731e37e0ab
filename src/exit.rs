//! Exit codes: 0 success, 1 a failure was found (or an operation failed), 2 usage or
//! configuration error.
//!
//! Who is at fault decides between 1 and 2: a flag, esm.toml or a file the operator named is
//! theirs to fix (2); a token, database or disk that fails while esm runs is not (1), even
//! when a retry with the same command line would succeed.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_failure_at_run_time_exits_1_not_2() {
        let e = anyhow::Error::new(esm_ca::Error::KeyBackend {
            backend: "pkcs11",
            reason: "PKCS#11 token \"esm-ca\" no longer holds key esm-root-1".into(),
        })
        .context("signing an SVID");
        assert_eq!(code_for(&e), FAILURE);
    }

    #[test]
    fn a_database_failure_at_run_time_exits_1_not_2() {
        let open = esm_audit::Error::Open {
            path: "/var/lib/esm/audit.db".into(),
            source: sqlx::Error::PoolTimedOut,
        };
        let e = anyhow::Error::new(open).context("opening the audit store");
        assert_eq!(code_for(&e), FAILURE);
        let e = anyhow::Error::new(esm_agent::Error::Database(sqlx::Error::PoolClosed));
        assert_eq!(code_for(&e), FAILURE);
        let e = anyhow::Error::new(esm_audit::Error::Database("disk I/O error".into()));
        assert_eq!(code_for(&e), FAILURE);
    }

    #[test]
    fn a_configuration_or_flag_mistake_exits_2() {
        let e = anyhow::Error::new(esm_ca::Error::Config("PKCS#11 token: wrong PIN".into()))
            .context("opening the CA");
        assert_eq!(code_for(&e), USAGE);
        assert_eq!(code_for(&usage("--ttl \"x\": not a duration")), USAGE);
        let e = anyhow::Error::new(esm_audit::Error::Config("audit.url".into()));
        assert_eq!(code_for(&e), USAGE);
    }
}
