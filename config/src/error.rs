//! What can be wrong with a configuration. Every variant is the operator's to fix (the file,
//! an `ESM_…` variable, or a file a key names), and its message says where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file itself does not open: a wrong `--config`, or no `esm init` yet.
    #[error("cannot read {} (run `esm init` first, or pass --config)", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Something inside the file at `path` is wrong; the source says what.
    #[error("in {}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
    /// The text is not TOML.
    #[error("not valid TOML")]
    Syntax(#[source] toml::de::Error),
    /// TOML, but with an unknown key, a missing key, or a value of the wrong type.
    #[error("invalid configuration")]
    Shape(#[source] toml::de::Error),
    /// `key` holds `value` (as written in the message), which is not one of `expected`.
    #[error("{key} = {value}: expected {expected}")]
    Expected {
        key: String,
        value: String,
        expected: String,
    },
    /// `key` holds `value`, which cannot be used for the reason given.
    #[error("{key} = {value}: {problem}")]
    BadValue {
        key: String,
        value: String,
        problem: String,
    },
    /// A rule about `key` (a range, an empty value, its relation to another key) is broken;
    /// the message names the key and the rule.
    #[error("{message}")]
    Rule { key: String, message: String },
    /// The file `key` names does not open, or is not what the key needs.
    #[error("{key} {}: {problem}", path.display())]
    KeyFile {
        key: String,
        path: PathBuf,
        problem: String,
    },
    /// The file a key names opened but could not be read to the end.
    #[error("reading {}", path.display())]
    KeyFileRead {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The content of the file `key` names is not valid for it.
    #[error("{key}: {problem}")]
    KeyContent { key: String, problem: String },
    /// A section that must be a table (`[ca]`) is a plain value, so an `ESM_…` variable
    /// cannot be set in it.
    #[error("[{section}] must be a table")]
    NotATable { section: String },
}

impl Error {
    /// True when the operator (file, flags, environment) is at fault; false for a file that
    /// opened but failed to read, a host fault.
    pub fn is_usage_error(&self) -> bool {
        match self {
            Self::InFile { source, .. } => source.is_usage_error(),
            Self::KeyFileRead { .. } => false,
            _ => true,
        }
    }

    /// The message followed by each cause's, joined by ": ", as the CLI prints it.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }

    /// The key at fault, when one is.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::InFile { source, .. } => source.key(),
            Self::Expected { key, .. }
            | Self::BadValue { key, .. }
            | Self::Rule { key, .. }
            | Self::KeyFile { key, .. }
            | Self::KeyFileRead { key, .. }
            | Self::KeyContent { key, .. } => Some(key),
            _ => None,
        }
    }

    pub(crate) fn expected(key: &str, value: impl Into<String>, expected: &str) -> Self {
        Self::Expected {
            key: key.to_owned(),
            value: value.into(),
            expected: expected.to_owned(),
        }
    }

    pub(crate) fn bad_value(key: &str, value: impl Into<String>, problem: impl ToString) -> Self {
        Self::BadValue {
            key: key.to_owned(),
            value: value.into(),
            problem: problem.to_string(),
        }
    }

    pub(crate) fn rule(key: &str, message: impl Into<String>) -> Self {
        Self::Rule {
            key: key.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn content(key: &str, problem: impl ToString) -> Self {
        Self::KeyContent {
            key: key.to_owned(),
            problem: problem.to_string(),
        }
    }
}
