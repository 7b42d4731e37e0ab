//! The one error type of esm-agent. Each variant says whose fault it is: the CLI maps it to
//! an exit code (caller or configuration → 2, anything found at run time → 1) and the admin
//! API to an HTTP status.

use std::path::PathBuf;

use esm_identity::{SpiffeId, SpiffeIdError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed a string that is not a valid SPIFFE ID.
    #[error("invalid SPIFFE ID: {0}")]
    InvalidSpiffeId(#[from] SpiffeIdError),
    /// The caller asked for something the agent will not do (a malformed selector, an entry
    /// over its bounds, a duplicate).
    #[error("{0}")]
    Refused(String),
    /// An entry for one of esm's own identities: refused on principle, not a typo.
    #[error("{0} is reserved: {why}", why = esm_identity::spiffe_id::RESERVED_WHY)]
    Reserved(SpiffeId),
    /// The configuration is wrong (an unsupported database URL, an unusable listener).
    #[error("configuration error: {0}")]
    Config(String),
    /// The registration entries' database failed while esm ran (unreachable, full, locked):
    /// nobody's typo, so not a usage error.
    #[error("registration entries database: {0}")]
    Database(#[source] sqlx::Error),
    /// The store layer shared with the audit log failed while esm ran (connecting,
    /// migrating): not a usage error.
    #[error("registration entries database: {0}")]
    Store(#[source] esm_audit::Error),
    /// A stored entry cannot be read back: it was edited or is damaged.
    #[error("{path} is damaged: {reason}")]
    CorruptState { path: PathBuf, reason: String },
    /// The CA cannot issue now (its key backend fails, its signing CA has expired): the
    /// CA's fault, retried, never the caller's.
    #[error("the CA cannot issue now: {0}")]
    CaUnavailable(String),
    /// The CA failed to issue or to load its material.
    #[error(transparent)]
    Ca(#[from] esm_ca::Error),
    /// An invariant of esm itself did not hold; a bug to report.
    #[error("internal error (a bug): {0}")]
    Bug(String),
}

impl Error {
    /// True when the error is the caller's or the configuration's fault rather than a failure
    /// found at run time (the CLI's exit code 2).
    pub fn is_usage_error(&self) -> bool {
        match self {
            Self::InvalidSpiffeId(_) | Self::Refused(_) | Self::Config(_) => true,
            Self::Ca(e) => e.is_usage_error(),
            _ => false,
        }
    }
}

impl From<esm_identity::Error> for Error {
    fn from(e: esm_identity::Error) -> Self {
        match e {
            esm_identity::Error::InvalidSpiffeId(e) => Self::InvalidSpiffeId(e),
            other => Self::Refused(other.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
