//! `[telemetry]`: how esm's logs are written. Text for a person at a terminal or
//! journald; JSON (one object per line, the dotted field names as keys) for a log
//! pipeline that indexes `spiffe.id` or `policy.set` without parsing prose.

use serde::Deserialize;

use crate::Error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTelemetry {
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

pub(crate) fn parse(raw: RawTelemetry) -> crate::Result<TelemetryConfig> {
    let log_format = match raw.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(Error::expected(
                "telemetry.log_format",
                format!("{other:?}"),
                "\"text\" or \"json\"",
            ))
        }
    };
    Ok(TelemetryConfig { log_format })
}
