//! Logs: installed by `App::run` unless the application installed its own subscriber.

use std::fmt;
use std::io::IsTerminal;

use tracing::Level;
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing_subscriber::Layer;
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat};
use crate::spans::{DESCRIBING, SPANS};

/// Dependencies whose debug and trace output carries secrets: async-nats logs its CONNECT (with
/// the password or token) and every message with its headers and body; hyper and h2 log request
/// headers (the session cookie); redis logs commands with their arguments.
const REVEALING_TARGETS: &[&str] = &[
    "async_nats",
    "redis",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "tokio_rustls",
];

/// Logs to stderr in `config.log_format`, filtered by `COHORT_LOG` or `RUST_LOG` (default
/// `info`), e.g. `COHORT_LOG=warn,cohort=debug`; the [`REVEALING_TARGETS`] never log below
/// `info`, whatever the filter says. With the `otel` feature and an OTLP endpoint set, the spans
/// are exported too. Does nothing when a global subscriber is already set.
pub(crate) fn init(config: &Config) {
    let spec = std::env::var("COHORT_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok();
    let filter = filter(spec.as_deref());
    let output = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_timer(TimeAndTrace)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .fmt_fields(PlacingFields)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    #[cfg(feature = "otel")]
    let (export, export_error) = match crate::otel::layer(&config.instance_id) {
        Ok(layer) => (layer, None),
        Err(e) => (None, Some(e)),
    };
    #[cfg(not(feature = "otel"))]
    let (export, export_error) = (None::<tracing_subscriber::layer::Identity>, None::<String>);
    let only_trace_ids_read = config.log_format == LogFormat::Text && export.is_none();
    let installed = tracing_subscriber::registry()
        .with(output)
        .with(export)
        .with(filter)
        .with(secret_safe())
        .try_init();
    if installed.is_ok() && only_trace_ids_read {
        crate::spans::only_trace_ids_read();
    }
    if let (Ok(()), Some(error)) = (installed, export_error) {
        tracing::warn!(error, "spans are not exported");
    }
}

/// A text line's time, and the trace id of the work it was logged in when that runs under its
/// bare trace id rather than a span (see [`Scope`](crate::spans::Scope)).
struct TimeAndTrace;

impl FormatTime for TimeAndTrace {
    fn format_time(&self, writer: &mut Writer<'_>) -> fmt::Result {
        SystemTime.format_time(writer)?;
        crate::spans::write_bare_trace_id(|id| write!(writer, " trace_id={id}"))
    }
}

/// The filter `spec` asks for (`info` when it is unset or does not parse), with Cohort's spans.
fn filter(spec: Option<&str>) -> Targets {
    spec.and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(Level::INFO))
        .with_target(SPANS, Level::INFO)
}

/// The text log's fields: an event's all, a span's only those that place it in a trace (its
/// `trace_id`): what Cohort's spans describe goes to OpenTelemetry and the JSON log, and
/// formatting it into every span of every request would cost every request.
struct PlacingFields;

impl<'writer> FormatFields<'writer> for PlacingFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Placing::new(writer, true);
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let empty = current.fields.is_empty();
        let mut visitor = Placing::new(current.as_writer(), empty);
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes every field but the describing ones of Cohort's spans the default way, and a
/// `trace_id` (in every span of every request) plainly, without the formatting machinery.
struct Placing<'a> {
    writer: Writer<'a>,
    empty: bool,
    result: fmt::Result,
}

impl<'a> Placing<'a> {
    fn new(writer: Writer<'a>, empty: bool) -> Placing<'a> {
        Placing {
            writer,
            empty,
            result: Ok(()),
        }
    }

    fn shows(field: &Field) -> bool {
        // Most names differ from every describing one at the first byte.
        let name = field.name();
        !(name.starts_with(['o', 'h', 'c']) && DESCRIBING.contains(&name))
    }

    /// Formats `field` as the default format does, unless it describes a span of Cohort's.
    fn write(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if !Self::shows(field) {
            return;
        }
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.empty);
        record(&mut visitor);
        self.result = self.result.and(visitor.finish());
        self.empty = false;
    }

    fn write_plain(&mut self, name: &str, value: &str) -> fmt::Result {
        if !self.empty {
            self.writer.write_char(' ')?;
        }
        self.empty = false;
        self.writer.write_str(name)?;
        self.writer.write_char('=')?;
        self.writer.write_str(value)
    }
}

impl Visit for Placing<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, |visitor| visitor.record_debug(field, value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "trace_id" => self.result = self.write_plain("trace_id", value),
            _ => self.write(field, |visitor| visitor.record_str(field, value)),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.write(field, |visitor| visitor.record_u64(field, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.write(field, |visitor| visitor.record_i64(field, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write(field, |visitor| visitor.record_bool(field, value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, |visitor| visitor.record_error(field, value));
    }
}

/// Client libraries whose info lines Cohort logs in its own words, once per change: async-nats
/// logs every connection event at info, ten `event: client error` lines a second while NATS is
/// down, where Cohort logs one WARN when the connection is lost and one INFO when it is back.
const FOLDED_TARGETS: &[&str] = &["async_nats"];

/// Lets everything through but the debug and trace events of the [`REVEALING_TARGETS`] and the
/// info lines of the [`FOLDED_TARGETS`]; it is combined with the user's filter, so both must let
/// an event through.
fn secret_safe() -> Targets {
    let revealing = REVEALING_TARGETS
        .iter()
        .map(|target| (*target, Level::INFO));
    let folded = FOLDED_TARGETS.iter().map(|target| (*target, Level::WARN));
    Targets::new()
        .with_default(Level::TRACE)
        .with_targets(revealing.chain(folded))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer, for reading what the fmt layer wrote.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn text_lines_show_a_spans_trace_id_but_not_what_it_describes() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .fmt_fields(PlacingFields),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "command",
                cohort.command = "ship",
                trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                cohort.status = tracing::field::Empty,
            );
            let _inside = span.enter();
            span.record("cohort.status", 200);
            tracing::info!(order = 7, "shipping");
        });
        let text = String::from_utf8(buffer.0.lock().expect("buffer lock").clone()).expect("UTF-8");
        assert!(
            text.contains("command{trace_id=4bf92f3577b34da6a3ce929d0e0e4736}:"),
            "{text}"
        );
        assert!(text.contains("shipping order=7"), "{text}");
        assert!(!text.contains("cohort."), "{text}");
    }

    #[test]
    fn spans_pass_a_filter_that_silences_cohort() {
        let filter = "warn"
            .parse::<Targets>()
            .expect("a filter")
            .with_target(SPANS, Level::INFO);
        assert!(filter.would_enable(SPANS, &Level::INFO));
        assert!(!filter.would_enable("cohort::app", &Level::INFO));
    }

    #[test]
    fn revealing_targets_stop_at_info() {
        let filter = secret_safe();
        assert!(!filter.would_enable("async_nats::connection", &Level::TRACE));
        assert!(!filter.would_enable("hyper::proto::h1", &Level::DEBUG));
        assert!(filter.would_enable("async_nats", &Level::WARN));
        assert!(!filter.would_enable("async_nats", &Level::INFO));
        assert!(filter.would_enable("redis", &Level::INFO));
        assert!(filter.would_enable("cohort::broker", &Level::TRACE));
        assert!(filter.would_enable("my_app", &Level::TRACE));
    }
}
