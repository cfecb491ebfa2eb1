//! OpenTelemetry export (feature `otel`): Cohort's spans go over OTLP/HTTP (protobuf) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, under the very
//! W3C ids that the messages carry and the logs show. The SDK reads the other standard variables
//! itself (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and its `_ARG`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, `_COMPRESSION`...).

use std::cell::Cell;
use std::sync::OnceLock;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::message::{flags_of, trace_id_of};

/// The exporting provider, once installed: flushed and shut down with the instance.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are to be exported: an OTLP endpoint is set.
fn endpoint_set() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|value| !value.is_empty()))
}

/// The layer that exports spans, when an endpoint is set; an exporter that cannot be built is an
/// error to log once logging is up.
pub(crate) fn layer<S>(instance: &str) -> Result<Option<impl Layer<S> + use<S>>, String>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    if !endpoint_set() {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("cannot export spans over OTLP: {e}"))?;
    let mut resource = Resource::builder()
        .with_attribute(KeyValue::new("service.instance.id", instance.to_owned()));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(program_name());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(CohortIds::default())
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("cohort");
    if PROVIDER.set(provider).is_err() {
        return Ok(None);
    }
    Ok(Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false),
    ))
}

/// The service name when `OTEL_SERVICE_NAME` does not give one: the program's file name.
fn program_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "cohort".to_owned())
}

/// Sends the spans not yet exported and stops exporting: at the end of `App::run`.
pub(crate) fn shutdown() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown()
    {
        tracing::warn!(error = %e, "could not export the last spans");
    }
}

thread_local! {
    /// The ids the next span started on this thread takes: Cohort's own, see [`adopt`].
    static NEXT_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Gives a span the ids Cohort chose for it, and random ones to every other span.
#[derive(Debug, Default)]
struct CohortIds {
    random: RandomIdGenerator,
}

impl IdGenerator for CohortIds {
    fn new_trace_id(&self) -> TraceId {
        NEXT_IDS
            .get()
            .map_or_else(|| self.random.new_trace_id(), |(trace, _)| trace)
    }

    fn new_span_id(&self) -> SpanId {
        NEXT_IDS
            .get()
            .map_or_else(|| self.random.new_span_id(), |(_, span)| span)
    }
}

/// Ties `span` to Cohort's ids, `own` under `parent`: starts its OpenTelemetry span here, now,
/// with those ids, under the parent from the wire, and returns `own`. An unsampled span (the
/// sampler's choice) turns its flags to `00`, so that what it calls is not sampled either.
pub(crate) fn adopt(
    span: &Span,
    name: impl FnOnce() -> String,
    mut own: String,
    parent: Option<&str>,
) -> String {
    if PROVIDER.get().is_none() || span.is_disabled() {
        return own;
    }
    let Some(ids) = ids_of(&own) else { return own };
    span.record("otel.name", name());
    if let Some(parent) = parent.and_then(span_context_of) {
        let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    }
    NEXT_IDS.set(Some(ids));
    let started = span.context();
    NEXT_IDS.set(None);
    if !started.span().span_context().is_sampled() && own.len() == 55 {
        own.replace_range(53.., "00");
    }
    own
}

fn ids_of(traceparent: &str) -> Option<(TraceId, SpanId)> {
    let trace = TraceId::from_hex(trace_id_of(traceparent)?).ok()?;
    let span = SpanId::from_hex(traceparent.get(36..52)?).ok()?;
    Some((trace, span))
}

/// The span context a `traceparent` names, as a remote parent.
fn span_context_of(traceparent: &str) -> Option<SpanContext> {
    let (trace, span) = ids_of(traceparent)?;
    let flags = u8::from_str_radix(flags_of(traceparent), 16).ok()?;
    let context = SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}
