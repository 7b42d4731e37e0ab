//! The one error type of esm-audit; each variant says whose fault it is.

/// The sequence number and reason of the first thing verification found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sequence {seq}: {reason}")]
pub struct Tampered {
    pub seq: u64,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller handed in an event the store will not take (bad kind, oversized field).
    #[error("event refused: {0}")]
    InvalidEvent(String),
    /// The queue is full and the store is configured to fail closed.
    #[error("audit queue is full (queue_full = \"block\" fails closed)")]
    QueueFull,
    /// The writer has stopped; nothing more can be stored.
    #[error("audit writer has stopped")]
    Closed,
    /// The configuration (URL, key files, options) is wrong.
    #[error("audit configuration: {0}")]
    Config(String),
    /// The stored log does not verify: evidence of tampering or damage.
    #[error("audit log does not verify: {0}")]
    Tampered(Tampered),
    /// The checkpoint key's HSM or vault did not sign: unreachable, refused, or it returned a
    /// signature that does not verify under the key's public half.
    #[error("audit checkpoint key: {0}")]
    KeyBackend(String),
    /// The database file or server failed or holds something esm did not write.
    #[error("audit database: {0}")]
    Database(String),
    /// The database driver failed: the server is unreachable, refused a statement, the
    /// disk is full, a value has the wrong type. The driver's error is the source, so a
    /// caller can tell a lost connection from a constraint the database enforced.
    #[error("audit database: {source}")]
    Sql {
        #[source]
        source: sqlx::Error,
    },
    /// The SQLite database at `path` did not open or answer its first query: a missing
    /// directory, no permission, a file that is not a database, a full disk. The driver's
    /// error is the source (printed after the path by `{:#}`), so its cause is not lost.
    #[error("audit database: {path}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    /// The audit writer's SQLite connection, or a scan's reader (verification, reports),
    /// failed; both talk to the file through rusqlite.
    #[error("audit database {path}: {source}")]
    Sqlite {
        path: std::path::PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The schema migrations failed (a store from a newer esm, a half-applied migration).
    #[error("audit database migration: {source}")]
    Migration {
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A batch the store kept refusing was given up (`retry_for` reached, or shutdown with
    /// the store still refusing). The store's last error is the source, shared by every
    /// waiter of the batch.
    #[error("audit batch given up: {source}")]
    GivenUp {
        #[source]
        source: std::sync::Arc<Error>,
    },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An invariant of esm itself did not hold; a bug to report.
    #[error("internal error (a bug): {0}")]
    Bug(String),
}

impl From<sqlx::Error> for Error {
    fn from(source: sqlx::Error) -> Self {
        Self::Sql { source }
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(source: sqlx::migrate::MigrateError) -> Self {
        Self::Migration { source }
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// True when the error is the caller's or the configuration's fault (CLI exit 2).
    pub fn is_usage_error(&self) -> bool {
        match self {
            Self::InvalidEvent(_) | Self::Config(_) => true,
            // `audit.url` names a file that is not a SQLite database: the wrong path. Every
            // other open failure (I/O, a full disk, a server down) is a run-time failure.
            Self::Open { source, .. } => is_not_a_database(source),
            _ => false,
        }
    }
}

/// SQLITE_NOTADB: the file opened but holds no SQLite database.
fn is_not_a_database(e: &sqlx::Error) -> bool {
    const SQLITE_NOTADB: &str = "26";
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some(SQLITE_NOTADB))
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
