//! The process's log subscriber. It starts as text before any configuration is read (a
//! bad config must still be reported) and switches to the configured format once a
//! command has loaded `esm.toml`: a reload layer, so that nothing logged in between is
//! lost or written twice. Beside it, the OTLP layer ([`crate::trace_export`]), off until
//! `esm serve` starts an exporter.

use std::sync::OnceLock;

use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use esm_config::telemetry::LogFormat;

/// The subscriber under the formatting layer: the `ESM_LOG` filter stays outside the
/// reload (tracing-subscriber cannot swap a per-layer filter).
type Filtered = Layered<EnvFilter, Registry>;
type Boxed = Box<dyn Layer<Filtered> + Send + Sync>;

static HANDLE: OnceLock<reload::Handle<Boxed, Filtered>> = OnceLock::new();

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("ESM_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"))
}

/// The formatting layer for `format`, writing to stderr.
fn layer(format: LogFormat) -> Boxed {
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        // Fields at the top level of each object, beside `timestamp`, `level`, `target`
        // and `message`: a pipeline queries `policy.set`, not `fields.policy.set`.
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    }
}

/// Installs the subscriber, writing text until [`set_format`] says otherwise.
pub fn init() {
    let (layer, handle) = reload::Layer::new(layer(LogFormat::Text));
    let subscriber = tracing_subscriber::registry()
        .with(filter())
        .with(layer)
        .with(crate::trace_export::layer());
    if subscriber.try_init().is_ok() {
        let _ = HANDLE.set(handle);
    }
}

/// Writes every later line in `format`.
pub fn set_format(format: LogFormat) {
    if format == LogFormat::Text {
        return;
    }
    if let Some(handle) = HANDLE.get() {
        if let Err(e) = handle.reload(layer(format)) {
            tracing::warn!(error = %e, "log format not changed");
        }
    }
}
