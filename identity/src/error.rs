//! The one error type of esm-identity. Every variant is about data handed in by the caller
//! (a string, a PEM block, a root certificate): the crate does no I/O of its own.

use crate::spiffe_id::SpiffeIdError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The string is not a valid SPIFFE ID or trust domain.
    #[error("invalid SPIFFE ID: {0}")]
    InvalidSpiffeId(#[from] SpiffeIdError),
    /// The text is not one PEM block.
    #[error("not PEM: {0}")]
    NotPem(String),
    /// A root certificate given for a bundle cannot be put in the SPIFFE bundle format.
    #[error("root certificate {0}")]
    UnusableRoot(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the caller handed in a bad string (the CLI's exit code 2); false for a root
    /// certificate that does not fit a bundle, which is a failure found in the data.
    pub fn is_usage_error(&self) -> bool {
        matches!(self, Self::InvalidSpiffeId(_) | Self::NotPem(_))
    }
}
