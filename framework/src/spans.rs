//! Spans: one for each HTTP request, command call, command run and event delivery, each with its
//! own W3C span id in the trace the messages carry. What a handler logs runs inside its span, so
//! its log lines show the trace id; with the `otel` feature the same spans, under the same ids,
//! go to OpenTelemetry.
//!
//! The fields that describe the work are recorded on the span for OpenTelemetry and the JSON log;
//! the text log shows only each span's `trace_id` ([`DESCRIBING`]), so that an instance formats
//! little per request.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing::Span;

use crate::message::child_traceparent;

/// The target of Cohort's spans. The log filter always lets them through, at `info`: they are not
/// log lines but what places the lines logged inside them (and OpenTelemetry's spans) in a trace.
pub(crate) const SPANS: &str = "cohort::spans";

/// The fields of Cohort's spans that describe the work rather than place it in a trace.
pub(crate) const DESCRIBING: &[&str] = &[
    "otel.name",
    "otel.kind",
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "cohort.command",
    "cohort.subscription",
    "cohort.event",
    "cohort.instance",
    "cohort.status",
    "cohort.outcome",
];

/// The traceparent of a new span under `parent` (a new trace when there is none), and the span,
/// made by `span` from the new span's trace id and tied to both ids for OpenTelemetry, whose
/// name for it `name` makes (only when spans are exported).
pub(crate) fn open(
    parent: Option<&str>,
    span: impl FnOnce(&str) -> Span,
    name: impl FnOnce() -> String,
) -> (Span, String) {
    let own = child_traceparent(parent);
    // `00-{trace id}-...`, as just made.
    let span = span(&own[3..35]);
    #[cfg(feature = "otel")]
    let own = crate::otel::adopt(&span, name, own, parent);
    #[cfg(not(feature = "otel"))]
    let _ = name;
    (span, own)
}

/// Whether anything reads the status and outcome recorded on spans when they end: not Cohort's
/// own text log without an export, which shows a span's trace id only.
static OUTCOMES_READ: AtomicBool = AtomicBool::new(true);

/// Tells that nothing reads the spans' outcomes, which then cost nothing.
pub(crate) fn outcomes_unread() {
    OUTCOMES_READ.store(false, Ordering::Relaxed);
}

/// Records `value` as `field` of the span the caller runs in (its status or outcome).
pub(crate) fn record(field: &'static str, value: impl tracing::Value) {
    if OUTCOMES_READ.load(Ordering::Relaxed) {
        Span::current().record(field, value);
    }
}
