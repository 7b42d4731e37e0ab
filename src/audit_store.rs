//! Wires the audit store for the binary: opens the configured database, loads the audit keys
//! (the checkpoint key from wherever `audit.key_backend` keeps it, the HMAC key from the data
//! dir) and starts the single writer. CLI commands that change something
//! (`init`, `cert issue`, `ca rotate`) record their events durably before they report success.

use std::collections::BTreeMap;

use anyhow::Context;
use esm_audit::checkpoint::SigningKey;
use esm_audit::redact::Redactor;
use esm_audit::store::Db;
use esm_audit::writer::{self, AuditSink, WriterHandle, WriterOptions};
use esm_audit::Event;

use esm_config::Config;

pub async fn open_db(cfg: &Config) -> anyhow::Result<Db> {
    Db::open(&cfg.audit.url, cfg.audit.schema.as_deref())
        .await
        .with_context(|| format!("opening the audit store {}", redacted_url(&cfg.audit.url)))
}

/// The store for a command that only reads it (verify, export, report): no whole-file
/// check of a SQLite store first, which would read all of it once more.
pub async fn open_db_to_read(cfg: &Config) -> anyhow::Result<Db> {
    Db::open_to_read(&cfg.audit.url, cfg.audit.schema.as_deref())
        .await
        .with_context(|| format!("opening the audit store {}", redacted_url(&cfg.audit.url)))
}

/// The URL without a password, for messages.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

pub struct Evidence {
    pub sink: AuditSink,
    pub db: Db,
    handle: WriterHandle,
}

/// How long a one-shot CLI command waits for a store that refuses its events (a full disk)
/// before it reports the error: long enough for a database restart.
const CLI_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(15);

impl Evidence {
    /// The server's writer: a batch the store refuses is retried until it takes it.
    pub async fn start(cfg: &Config, env: &BTreeMap<String, String>) -> anyhow::Result<Self> {
        Self::with_key(cfg, open_key(cfg, env).await?).await
    }

    /// [`Evidence::start`] with the checkpoint key already open.
    pub async fn with_key(cfg: &Config, key: SigningKey) -> anyhow::Result<Self> {
        Self::start_with(cfg, key, None).await
    }

    async fn start_with(
        cfg: &Config,
        key: SigningKey,
        retry_for: Option<std::time::Duration>,
    ) -> anyhow::Result<Self> {
        let db = open_db(cfg).await?;
        // The redaction key is made with the log, never for a log that already has events.
        let redactor = match db.last_seq().await? {
            Some(_) => Redactor::load(&cfg.audit_dir())?,
            None => Redactor::load_or_create(&cfg.audit_dir())?,
        };
        let opts = WriterOptions {
            queue_capacity: cfg.audit.queue_capacity,
            on_full: cfg.audit.on_full,
            checkpoint_every: cfg.audit.checkpoint_every,
            checkpoint_interval: cfg.audit.checkpoint_interval,
            // In sync mode every answer waits for the writer's commit: the writer is then on
            // the request path, and a lowered priority would starve it exactly when the box
            // is busiest.
            nice: match cfg.authz.decision_log_mode {
                esm_authz::service::DecisionLogMode::Sync => 0,
                _ => cfg.audit.writer_nice,
            },
            node: cfg.audit.node.clone(),
            retry_for,
            ..WriterOptions::default()
        };
        let (sink, handle) = writer::start(db.clone(), key, redactor, opts)
            .await
            .context("starting the audit writer")?;
        Ok(Self { sink, db, handle })
    }

    /// Drains the queue, writes a final checkpoint and closes the database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        drop(self.sink);
        self.handle
            .shutdown()
            .await
            .context("stopping the audit writer")?;
        self.db.close().await;
        Ok(())
    }
}

/// The checkpoint key, opened on a blocking thread: a token login or a vault round trip
/// never holds up an async worker.
pub async fn open_key(cfg: &Config, env: &BTreeMap<String, String>) -> anyhow::Result<SigningKey> {
    let (cfg, env) = (cfg.clone(), env.clone());
    tokio::task::spawn_blocking(move || crate::audit_key::open(&cfg, &env))
        .await
        .context("opening the audit checkpoint key")?
}

/// Records `events` and waits until they are committed, for one-shot CLI commands.
pub async fn record(cfg: &Config, key: SigningKey, events: Vec<Event>) -> anyhow::Result<Vec<u64>> {
    let ev = Evidence::start_with(cfg, key, Some(CLI_RETRY_FOR)).await?;
    let mut seqs = Vec::with_capacity(events.len());
    let mut result = Ok(());
    for e in events {
        match ev.sink.record(e).await {
            Ok(seq) => seqs.push(seq),
            Err(e) => {
                result = Err(anyhow::Error::new(e).context("recording the audit event"));
                break;
            }
        }
    }
    ev.shutdown().await?;
    result.map(|()| seqs)
}

/// [`record`] from synchronous code.
pub fn record_now(
    cfg: &Config,
    env: &BTreeMap<String, String>,
    events: Vec<Event>,
) -> anyhow::Result<Vec<u64>> {
    record_now_with(cfg, crate::audit_key::open(cfg, env)?, events)
}

/// [`record_now`] with the checkpoint key already open.
pub fn record_now_with(
    cfg: &Config,
    key: SigningKey,
    events: Vec<Event>,
) -> anyhow::Result<Vec<u64>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(record(cfg, key, events))
}

/// The local user running a CLI command, as the audit log names it: `cli:uid:N`.
pub fn cli_actor() -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata("/proc/self") {
            return format!("cli:uid:{}", m.uid());
        }
    }
    "cli".into()
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn redacts_password_in_database_url() {
        assert_eq!(
            redacted_url("postgres://esm:s3cret@db:5432/esm"),
            "postgres://esm:***@db:5432/esm"
        );
        assert_eq!(
            redacted_url("postgres://esm@db/esm"),
            "postgres://esm@db/esm"
        );
        assert_eq!(redacted_url("sqlite:///x/audit.db"), "sqlite:///x/audit.db");
    }
}
