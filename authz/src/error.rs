//! The one error type of esm-authz; each variant says whose fault it is.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A policy file, data file or bundle does not load, compile or pass its own tests:
    /// the policy author's fault. The old policy keeps serving.
    #[error("policy {path}: {reason}")]
    Policy { path: String, reason: String },
    /// The CheckRequest cannot be turned into a policy input (too many headers, a body that
    /// is not what its content-type says): the peer's fault; the request is denied.
    #[error("request: {0}")]
    Request(String),
    /// Evaluation failed or ran out of its time budget; the request is denied.
    #[error("evaluation: {0}")]
    Evaluation(String),
    /// The policy's result is not a boolean or a decision object OPA-Envoy would accept.
    #[error("policy result: {0}")]
    Result(String),
    /// A JSON Web Token or a key to verify one cannot be used (malformed, unsupported
    /// algorithm): the token's sender's or the key's provider's fault; a policy that relies
    /// on it denies.
    #[error("jwt: {0}")]
    Jwt(String),
    /// A policy bundle cannot be opened, is outside its limits, or its signature does not
    /// verify: the bundle publisher's fault. The old policy keeps serving.
    #[error("bundle {path}: {reason}")]
    Bundle { path: String, reason: String },
    /// The bundle server cannot be reached, answered an error, or its answer could not be
    /// kept: the server's or the network's fault. The last good bundle keeps serving.
    #[error("bundle server {url}: {reason}")]
    BundleServer { url: String, reason: String },
    /// The configuration is wrong (addresses, rule path, budgets).
    #[error("authz configuration: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    pub(crate) fn policy(path: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Policy {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    /// True when the error is the caller's or the configuration's fault (CLI exit 2).
    pub fn is_usage_error(&self) -> bool {
        matches!(self, Self::Config(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
