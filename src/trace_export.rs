//! Optional OTLP/gRPC export of esm's `tracing` spans (`telemetry.otlp_endpoint`).
//!
//! The layer that turns spans into OpenTelemetry spans is in the subscriber from the first
//! line logged (a Check span can only take Envoy's span as parent through a layer that is
//! really in the stack, not behind a reload), but it is switched off, and costs one atomic
//! load per span, until [`start`] installs a tracer. Spans go to a bounded queue that a
//! single export thread drains: a full queue drops spans, a dead collector costs exports
//! their timeout on that thread, and a request never waits for either.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::global::{BoxedSpan, BoxedTracer};
use opentelemetry::trace::{noop::NoopTracer, SpanBuilder, Tracer, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Spans waiting for export at most; past it new spans are dropped (about 1 KiB each).
const QUEUE: usize = 4096;
/// Spans sent in one Export call.
const BATCH: usize = 512;
/// How often the export thread sends what is queued.
const DELAY: Duration = Duration::from_secs(1);
/// A collector that does not accept a connection in this long is taken as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One Export call's deadline.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// What shutdown gives the last flush: well inside the drain esm has on SIGTERM.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

static TRACER: OnceLock<BoxedTracer> = OnceLock::new();
static OFF: LazyLock<BoxedTracer> = LazyLock::new(|| BoxedTracer::new(Box::new(NoopTracer::new())));

/// The tracer the layer holds from the start: the exporting one once [`start`] has run.
pub struct Deferred;

impl Tracer for Deferred {
    type Span = BoxedSpan;

    fn build_with_context(
        &self,
        builder: SpanBuilder,
        parent: &opentelemetry::Context,
    ) -> BoxedSpan {
        TRACER
            .get()
            .unwrap_or(&OFF)
            .build_with_context(builder, parent)
    }
}

/// Whether spans are exported; false until [`start`].
fn exporting() -> bool {
    TRACER.get().is_some()
}

/// The exporter's own stack (its gRPC client) is never traced: that would feed itself.
fn own_stack(target: &str) -> bool {
    ["opentelemetry", "tonic", "h2", "hyper", "tower"]
        .iter()
        .any(|p| target.starts_with(p))
}

/// The OpenTelemetry layer, off until [`start`].
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::OpenTelemetryLayer::new(Deferred)
        .with_filter(filter_fn(|m| exporting() && !own_stack(m.target())))
}

/// The running exporter; [`Exporter::shutdown`] flushes it.
pub struct Exporter {
    provider: SdkTracerProvider,
}

/// Starts exporting to `endpoint` (`http://host:port`, OTLP/gRPC), with `node` as the
/// resource's instance. Must run inside the tokio runtime: the gRPC channel's connection
/// task lives there. Nothing is sent until there are spans; a collector that is down
/// only makes exports fail.
pub fn start(endpoint: &str, node: &str) -> anyhow::Result<Exporter> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .with_context(|| format!("telemetry.otlp_endpoint = {endpoint:?}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(EXPORT_TIMEOUT)
        .connect_lazy();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_channel(channel)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("building the OTLP exporter")?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE)
                .with_max_export_batch_size(BATCH)
                .with_scheduled_delay(DELAY)
                .build(),
        )
        .build();
    let resource = Resource::builder_empty()
        .with_service_name("esm")
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", node.to_owned()),
            KeyValue::new("host.name", node.to_owned()),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_resource(resource)
        .build();
    if TRACER
        .set(BoxedTracer::new(Box::new(provider.tracer("esm"))))
        .is_err()
    {
        anyhow::bail!("trace export started twice");
    }
    tracing::info!(otlp.endpoint = %endpoint, "exporting traces");
    Ok(Exporter { provider })
}

impl Exporter {
    /// Sends what is queued (at most [`FLUSH_TIMEOUT`]) and stops the export thread.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        match done {
            Ok(Ok(())) => tracing::info!("traces flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "traces not all flushed"),
            Err(e) => tracing::warn!(error = %e, "traces not flushed"),
        }
    }
}
