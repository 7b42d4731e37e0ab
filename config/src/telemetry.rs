//! `[telemetry]`: how esm's logs are written. Text for a person at a terminal or
//! journald; JSON (one object per line, the dotted field names as keys) for a log
//! pipeline that indexes `spiffe.id` or `policy.set` without parsing prose. And where
//! spans go, if anywhere: an OTLP/gRPC collector.

use serde::Deserialize;

use crate::Error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTelemetry {
    log_format: String,
    otlp_endpoint: String,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        Self {
            log_format: "text".into(),
            otlp_endpoint: String::new(),
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
    /// Where spans are exported over OTLP/gRPC (`http://host:port`); none: no export, no
    /// exporter thread. Plain HTTP/2 only: a collector on the node or in the pod carries
    /// them on over TLS (esm's binary has no TLS client for it).
    pub otlp_endpoint: Option<String>,
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
    let otlp_endpoint = otlp_endpoint(raw.otlp_endpoint)?;
    Ok(TelemetryConfig {
        log_format,
        otlp_endpoint,
    })
}

/// `http://host:port` and nothing else: a path, user info or another scheme would be
/// ignored or misread by the gRPC client, so they are refused here, naming the key.
fn otlp_endpoint(raw: String) -> crate::Result<Option<String>> {
    const KEY: &str = "telemetry.otlp_endpoint";
    const WANT: &str = "\"http://host:port\"";
    let v = raw.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.starts_with("https://") {
        return Err(Error::bad_value(
            KEY,
            format!("{v:?}"),
            "TLS to the collector is not built in; expected \"http://host:port\" of a local collector",
        ));
    }
    let Some(authority) = v.strip_prefix("http://") else {
        return Err(Error::expected(KEY, format!("{v:?}"), WANT));
    };
    let authority = authority.trim_end_matches('/');
    let port = authority
        .rsplit_once(':')
        .map(|(h, p)| (h, p.parse::<u16>()));
    match port {
        Some((host, Ok(port)))
            if !host.is_empty() && port != 0 && !authority.contains(['/', '@', ' ']) =>
        {
            Ok(Some(format!("http://{authority}")))
        }
        _ => Err(Error::expected(KEY, format!("{v:?}"), WANT)),
    }
}
