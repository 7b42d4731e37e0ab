//! `[telemetry]`: how esm's logs are written. Text for a person at a terminal or
//! journald; JSON (one object per line, the dotted field names as keys) for a log
//! pipeline that indexes `spiffe.id` or `policy.set` without parsing prose.

use anyhow::bail;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTelemetry {
    log_format: String,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        Self {
            log_format: "text".into(),
        }
    }
}

/// The format of every log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
}

pub fn parse(raw: RawTelemetry) -> anyhow::Result<TelemetryConfig> {
    let log_format = match raw.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => bail!("telemetry.log_format = {other:?}: expected \"text\" or \"json\""),
    };
    Ok(TelemetryConfig { log_format })
}
