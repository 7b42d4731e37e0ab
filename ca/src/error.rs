//! The one error type of esm-ca. Each variant says whose fault it is, so the CLI can map it to
//! an exit code (caller/config → 2, peer input → 1) and the SDS server to a gRPC status.

use std::path::PathBuf;

use crate::csr::CsrError;
use esm_identity::spiffe_id::{SpiffeId, SpiffeIdError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed a string that is not a valid SPIFFE ID or trust domain.
    #[error("invalid SPIFFE ID: {0}")]
    InvalidSpiffeId(#[from] SpiffeIdError),
    /// The peer's certificate signing request was refused; no certificate was made.
    #[error("CSR refused: {0}")]
    CsrRefused(#[from] CsrError),
    /// The caller asked for something the CA will not do (wrong trust domain, bad TTL, …).
    #[error("{0}")]
    Refused(String),
    /// The caller asked for one of esm's own identities (`spiffe://<td>/esm/...`) for a
    /// workload. Not a typo but a refusal on principle, so not a usage error: whoever held
    /// such an SVID could pose as esm's agent to every Envoy that checks it.
    #[error("{0} is reserved: {why}", why = esm_identity::spiffe_id::RESERVED_WHY)]
    Reserved(SpiffeId),
    /// The configuration or the data dir's settings are wrong.
    #[error("configuration error: {0}")]
    Config(String),
    /// The data dir has no CA yet.
    #[error("no CA in {0}: run `esm init` first")]
    NotInitialized(PathBuf),
    /// `esm init` on a data dir that already holds a CA.
    #[error("a CA already exists in {0}")]
    AlreadyInitialized(PathBuf),
    /// The data dir's state cannot be read back: it was edited or is damaged.
    #[error("CA state in {path} is damaged: {reason}")]
    CorruptState { path: PathBuf, reason: String },
    /// The active signing CA is past its validity: nothing can be issued until the CA
    /// rotates. The CA's state, not the caller's request, is at fault.
    #[error("signing CA {0} has expired; rotate the CA")]
    SigningCaExpired(String),
    /// A key backend failed (file unreadable, wrong passphrase, HSM error, …).
    #[error("key backend {backend}: {reason}")]
    KeyBackend {
        backend: &'static str,
        reason: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An invariant of esm itself did not hold; a bug to report.
    #[error("internal error (a bug): {0}")]
    Bug(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// True when the error is the caller's or the configuration's fault rather than a failure
    /// found in the data (the CLI's exit code 2).
    pub fn is_usage_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidSpiffeId(_)
                | Self::Refused(_)
                | Self::Config(_)
                | Self::NotInitialized(_)
                | Self::AlreadyInitialized(_)
                | Self::CsrRefused(_)
        )
    }
}

/// What esm-identity refuses is the caller's input (an ID, a PEM block), except a root that
/// cannot go into a bundle: the CA made that root itself, so that one is a bug.
impl From<esm_identity::Error> for Error {
    fn from(e: esm_identity::Error) -> Self {
        match e {
            esm_identity::Error::InvalidSpiffeId(e) => Self::InvalidSpiffeId(e),
            esm_identity::Error::NotPem(m) => Self::Refused(format!("not PEM: {m}")),
            other => Self::Bug(other.to_string()),
        }
    }
}

impl From<rcgen::Error> for Error {
    fn from(e: rcgen::Error) -> Self {
        match e {
            // The CA key's backend refused to sign (already logged with the key's id): the
            // backend is at fault, not the encoder.
            rcgen::Error::RemoteKeyError => Self::KeyBackend {
                backend: "signing key",
                reason: "the key backend failed to sign".into(),
            },
            other => Self::Bug(format!("certificate encoding: {other}")),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
