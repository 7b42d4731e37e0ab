//! The one error type of esm-report; each variant says whose fault it is.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller asked for something that cannot be: a bad date, `from` after `to`, an
    /// unknown framework, a framework file that does not parse.
    #[error("{0}")]
    Usage(String),
    /// The audit store could not be read (or does not exist).
    #[error("audit store: {0}")]
    Store(#[from] esm_audit::Error),
    /// A report handed to `verify` is not one esm wrote (no seal, unreadable).
    #[error("not an esm report: {0}")]
    NotAReport(String),
    /// An invariant of esm itself did not hold; a bug to report.
    #[error("internal error (a bug): {0}")]
    Bug(String),
}

impl Error {
    /// True when the error is the caller's fault (CLI exit 2).
    pub fn is_usage_error(&self) -> bool {
        matches!(self, Self::Usage(_) | Self::NotAReport(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
