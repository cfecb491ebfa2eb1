//! Spans: one for each HTTP request, command call, command run and event delivery, each with its
//! own W3C span id in the trace the messages carry. What a handler logs runs inside its span, so
//! its log lines show the trace id; with the `otel` feature the same spans, under the same ids,
//! go to OpenTelemetry.
//!
//! The fields that describe the work are recorded on the span for OpenTelemetry and the JSON log;
//! the text log shows only each span's `trace_id` ([`DESCRIBING`]), so that an instance formats
//! little per request. When nothing reads spans beyond their trace id, the work runs under its
//! bare trace id instead of a span ([`Scope`]).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::Either;
use tokio::task::futures::TaskLocalFuture;
use tracing::Span;
use tracing::instrument::{Instrument, Instrumented};

use crate::message::{child_traceparent, trace_id_of};

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

/// A span of Cohort's named `$name` with its `trace_id` and the fields that describe the work.
macro_rules! cohort_span {
    ($(parent: $parent:expr,)? $name:literal, $trace_id:expr, $($describing:tt)*) => {
        tracing::info_span!(
            target: $crate::spans::SPANS,
            $(parent: $parent,)?
            $name,
            trace_id = $trace_id,
            $($describing)*
        )
    };
}
pub(crate) use cohort_span;

tokio::task_local! {
    /// The trace id of the work being polled, when it runs under its bare trace id.
    static TRACE_ID: TraceId;
}

/// A trace id in lowercase hex, kept inline.
#[derive(Clone, Copy)]
pub(crate) struct TraceId([u8; 32]);

impl TraceId {
    /// The trace id `hex`, as 32 hex digits are (shorter is padded with `0`, longer cut).
    pub(crate) fn of(hex: &str) -> TraceId {
        let mut id = [b'0'; 32];
        let hex = hex.as_bytes();
        let n = hex.len().min(id.len());
        id[..n].copy_from_slice(&hex[..n]);
        TraceId(id)
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// What a piece of work runs in: its span, or, when nothing reads spans beyond their trace id
/// ([`detailed`]), its bare trace id, for the text log: a span costs a request thousands of
/// instructions in the subscriber, a task-local a few.
pub(crate) enum Scope {
    Span(Span),
    Trace(TraceId),
}

impl Scope {
    /// `work`, polled in this scope.
    pub(crate) fn run<F: Future>(
        self,
        work: F,
    ) -> Either<Instrumented<F>, TaskLocalFuture<TraceId, F>> {
        match self {
            Scope::Span(span) => Either::Left(work.instrument(span)),
            Scope::Trace(id) => Either::Right(TRACE_ID.scope(id, work)),
        }
    }
}

/// Writes with `write` the trace id of the work polled on this thread, when it runs under its
/// bare trace id.
pub(crate) fn write_bare_trace_id(write: impl FnOnce(&str) -> fmt::Result) -> fmt::Result {
    TRACE_ID.try_with(|id| write(id.as_str())).unwrap_or(Ok(()))
}

/// The scope of new work under `traceparent`, its parent's (none starts a trace), which then
/// becomes the work's own: the span made by `span` from the trace id, with a new span id in the
/// traceparent, tied to both for OpenTelemetry, whose name for it `name` makes (only when spans
/// are exported); or, when nothing reads spans beyond their trace id, that trace id alone, and
/// the parent's traceparent stays: the work has no span of its own for a child to point at.
pub(crate) fn open(
    traceparent: &mut Option<String>,
    span: impl FnOnce(&str) -> Span,
    name: impl FnOnce() -> String,
) -> Scope {
    if !detailed() {
        return Scope::Trace(continued(traceparent));
    }
    let parent = traceparent.take();
    let own = child_traceparent(parent.as_deref());
    let span = span(own_trace_id(&own));
    #[cfg(feature = "otel")]
    let own = crate::otel::adopt(&span, name, own, parent.as_deref());
    #[cfg(not(feature = "otel"))]
    let _ = name;
    *traceparent = Some(own);
    Scope::Span(span)
}

/// The trace id of work without a span of its own: its parent's, whose `traceparent` it keeps,
/// when that is valid; else a new trace's, whose traceparent replaces it.
fn continued(traceparent: &mut Option<String>) -> TraceId {
    if let Some(trace_id) = traceparent.as_deref().and_then(trace_id_of) {
        return TraceId::of(trace_id);
    }
    let own = child_traceparent(None);
    let trace_id = TraceId::of(own_trace_id(&own));
    *traceparent = Some(own);
    trace_id
}

/// The trace id of a traceparent [`child_traceparent`] made: `00-{trace id}-...`.
fn own_trace_id(own: &str) -> &str {
    &own[3..35]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_without_a_span_continues_a_valid_parent_and_starts_a_trace_otherwise() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut traceparent = Some(parent.to_owned());
        let trace_id = continued(&mut traceparent);
        assert_eq!(traceparent.as_deref(), Some(parent));
        assert_eq!(trace_id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");

        let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        for parent in [None, Some(zero), Some("not a traceparent")] {
            let mut traceparent = parent.map(str::to_owned);
            let trace_id = continued(&mut traceparent);
            let traceparent = traceparent.expect("a new trace's traceparent");
            assert_eq!(trace_id_of(&traceparent), Some(trace_id.as_str()));
            assert_ne!(trace_id.as_str(), "00000000000000000000000000000000");
        }
    }
}
