//! The `[audit]` section of esm.toml: where the tamper-evident log lives, how its writer
//! behaves when producers outrun the disk, and how often it checkpoints.

use std::path::Path;

use serde::Deserialize;

use crate::values::int_or_string;
use crate::Error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAudit {
    url: String,
    schema: String,
    queue_full: String,
    #[serde(deserialize_with = "int_or_string")]
    queue_capacity: u64,
    #[serde(deserialize_with = "int_or_string")]
    checkpoint_every: u64,
    checkpoint_interval: String,
    #[serde(deserialize_with = "int_or_string")]
    writer_nice: u64,
    node: String,
    pub(crate) key_backend: String,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            url: "sqlite://audit.db".into(),
            schema: String::new(),
            queue_full: "block".into(),
            queue_capacity: 65_536,
            checkpoint_every: 10_000,
            checkpoint_interval: "60s".into(),
            writer_nice: 10,
            node: String::new(),
            key_backend: "file".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `sqlite://ABSOLUTE-OR-DATA-DIR-RELATIVE-PATH` resolved, or a PostgreSQL URL.
    pub url: String,
    pub schema: Option<String>,
    pub on_full: esm_audit::writer::OnFull,
    pub queue_capacity: usize,
    pub checkpoint_every: u64,
    pub checkpoint_interval: std::time::Duration,
    pub writer_nice: i32,
    pub node: String,
}

pub(crate) fn parse(raw: RawAudit, data_dir: &Path) -> crate::Result<AuditConfig> {
    let url = match raw.url.strip_prefix("sqlite://") {
        Some(path) if Path::new(path).is_relative() => {
            format!("sqlite://{}", data_dir.join(path).display())
        }
        Some(_) => raw.url.clone(),
        None if raw.url.starts_with("postgres://") || raw.url.starts_with("postgresql://") => {
            raw.url.clone()
        }
        None => {
            return Err(Error::expected(
                "audit.url",
                format!("{:?}", raw.url),
                "sqlite://PATH or postgres://…",
            ))
        }
    };
    let on_full = match raw.queue_full.as_str() {
        "block" => esm_audit::writer::OnFull::Block,
        "drop" => esm_audit::writer::OnFull::Drop,
        other => {
            return Err(Error::expected(
                "audit.queue_full",
                format!("{other:?}"),
                "\"block\" or \"drop\"",
            ))
        }
    };
    if raw.queue_capacity == 0 || raw.queue_capacity > 16 << 20 {
        return Err(Error::rule(
            "audit.queue_capacity",
            "audit.queue_capacity must be between 1 and 16777216",
        ));
    }
    if raw.checkpoint_every == 0 {
        return Err(Error::rule(
            "audit.checkpoint_every",
            "audit.checkpoint_every must be at least 1",
        ));
    }
    let interval = crate::duration("audit.checkpoint_interval", &raw.checkpoint_interval)?;
    let writer_nice = match i32::try_from(raw.writer_nice) {
        Ok(n @ 0..=19) => n,
        _ => {
            return Err(Error::rule(
                "audit.writer_nice",
                "audit.writer_nice must be between 0 and 19",
            ))
        }
    };
    let node = if raw.node.is_empty() {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    } else {
        raw.node
    };
    Ok(AuditConfig {
        url,
        schema: (!raw.schema.is_empty()).then_some(raw.schema),
        on_full,
        queue_capacity: raw.queue_capacity as usize,
        checkpoint_every: raw.checkpoint_every,
        checkpoint_interval: std::time::Duration::try_from(interval).map_err(|_| {
            Error::rule(
                "audit.checkpoint_interval",
                "audit.checkpoint_interval is out of range",
            )
        })?,
        writer_nice,
        node,
    })
}
