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

/// A span of Cohort's named `$name` with its `trace_id`, and the fields that describe the work
/// only when anything reads them ([`detailed`]): each field costs every request its formatting.
macro_rules! cohort_span {
    ($(parent: $parent:expr,)? $name:literal, $trace_id:expr, $($describing:tt)*) => {
        if $crate::spans::detailed() {
            tracing::info_span!(
                target: $crate::spans::SPANS,
                $(parent: $parent,)?
                $name,
                trace_id = $trace_id,
                $($describing)*
            )
        } else {
            tracing::info_span!(
                target: $crate::spans::SPANS,
                $(parent: $parent,)?
                $name,
                trace_id = $trace_id,
            )
        }
    };
}
pub(crate) use cohort_span;

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

/// Whether anything reads spans beyond their trace id: an export, the JSON log, or a subscriber
/// of the application's own. Cohort's text log without an export does not: then the spans that
/// matter to nothing else (a call's, see [`detailed`]), the fields that describe the work and the
/// outcomes are left out.
static DETAILED: AtomicBool = AtomicBool::new(true);

/// Tells that nothing reads spans beyond their trace id.
pub(crate) fn only_trace_ids_read() {
    DETAILED.store(false, Ordering::Relaxed);
}

/// Whether anything reads spans beyond their trace id. Without, a call has no span of its own:
/// the command's run is the caller's span's child, and every log line still has its trace id.
pub(crate) fn detailed() -> bool {
    DETAILED.load(Ordering::Relaxed)
}

/// Records `value` as `field` of the span the caller runs in (its status or outcome), when
/// anything reads it.
pub(crate) fn record(field: &'static str, value: impl tracing::Value) {
    if detailed() {
        Span::current().record(field, value);
    }
}
