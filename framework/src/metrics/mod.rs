//! Prometheus metrics: what an instance measures, named after OpenTelemetry's semantic conventions
//! where one exists, rendered at `GET /metrics` in the Prometheus text format.
//!
//! Each instance has its own registry (several can run in one process). Every label value comes
//! from the registry of commands, routes and subscriptions or from a fixed set (status codes,
//! error kinds), never from a request. The handles a request records into are resolved at start,
//! so that the common case (a success) observes a histogram without a lookup or an allocation.

mod scrape;
mod store;

use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub(crate) use scrape::{Scraper, router as metrics_router};
pub(crate) use store::MeteredStore;

use crate::drift::{About, Finding};
use crate::error::{Error, ErrorKind};
use crate::message::Message;
use crate::task::{TaskOutcome, TaskStatus};

/// The upper bounds of every duration histogram, in seconds: OpenTelemetry's advice for HTTP
/// server durations, below a millisecond finer, where most commands finish.
const DURATION_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
    7.5, 10.0,
];

/// The outcome label of a success.
const OK: &str = "ok";

type Durations<L> = Family<L, Histogram, fn() -> Histogram>;

/// A family of duration histograms, each with [`DURATION_BUCKETS`].
fn durations<L: Clone + std::hash::Hash + Eq>() -> Durations<L> {
    Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS))
}

/// A command as a label value: `{service}.v{version}.{name}`, written out only when scraped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CommandName {
    pub(crate) service: &'static str,
    pub(crate) version: u32,
    pub(crate) name: &'static str,
}

impl std::fmt::Display for CommandName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.v{}.{}", self.service, self.version, self.name)
    }
}

impl EncodeLabelValue for CommandName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        write!(encoder, "{self}")
    }
}

/// A subscription or a task as a label value: `{service}.{name}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct QualifiedName {
    pub(crate) service: &'static str,
    pub(crate) name: &'static str,
}

impl std::fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.service, self.name)
    }
}

impl EncodeLabelValue for QualifiedName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        write!(encoder, "{self}")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    http_request_method: &'static str,
    http_route: &'static str,
    http_response_status_code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CommandLabels {
    command: CommandName,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DriftLabels {
    about: About,
    kind: &'static str,
}

impl EncodeLabelSet for DriftLabels {
    /// `command="..."` or `event="..."`, then `kind`: each finding has the label of what it is
    /// about and no empty other one.
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let about = match &self.about {
            About::Command(_) => "command",
            About::Event(_) => "event",
        };
        [
            (about, self.about.to_string()),
            ("kind", self.kind.to_owned()),
        ]
        .encode(encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SubscriptionLabels {
    subscription: QualifiedName,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EventLabels {
    subscription: QualifiedName,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TaskLabels {
    task: QualifiedName,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TaskRunLabels {
    task: QualifiedName,
    outcome: &'static str,
}

/// A gauge of unix seconds.
type Timestamps = Family<TaskLabels, Gauge<f64, AtomicU64>>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StoreLabels {
    db_operation_name: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StoreErrorLabels {
    db_operation_name: &'static str,
    error_type: &'static str,
}

/// The metrics of one instance.
pub(crate) struct Metrics {
    registry: Registry,
    http: Durations<HttpLabels>,
    command_client: Durations<CommandLabels>,
    command_server: Durations<CommandLabels>,
    events: Family<EventLabels, Counter>,
    redeliveries: Family<SubscriptionLabels, Counter>,
    dead_letters: Family<SubscriptionLabels, Counter>,
    pending: Family<SubscriptionLabels, Gauge>,
    store_durations: Durations<StoreLabels>,
    store_errors: Family<StoreErrorLabels, Counter>,
    broker_connected: Gauge,
    store_connected: Gauge,
    drift: Family<DriftLabels, Gauge>,
    task_runs: Family<TaskRunLabels, Counter>,
    task_durations: Durations<TaskLabels>,
    task_last_run: Timestamps,
    task_next_run: Timestamps,
    task_running: Family<TaskLabels, Gauge>,
}

impl Metrics {
    /// The metrics of the instance `instance_id`, every family registered and empty.
    pub(crate) fn new(instance_id: &str) -> Metrics {
        let metrics = Metrics {
            registry: Registry::default(),
            http: durations(),
            command_client: durations(),
            command_server: durations(),
            events: Family::default(),
            redeliveries: Family::default(),
            dead_letters: Family::default(),
            pending: Family::default(),
            store_durations: durations(),
            store_errors: Family::default(),
            broker_connected: Gauge::default(),
            store_connected: Gauge::default(),
            drift: Family::default(),
            task_runs: Family::default(),
            task_durations: durations(),
            task_last_run: Family::default(),
            task_next_run: Family::default(),
            task_running: Family::default(),
        };
        metrics.registered(instance_id)
    }

    fn registered(mut self, instance_id: &str) -> Metrics {
        let registry = &mut self.registry;
        registry.register(
            "http_server_request_duration_seconds",
            "Duration of HTTP requests to the command routes, by route template",
            self.http.clone(),
        );
        registry.register(
            "cohort_command_client_duration_seconds",
            "Duration of commands this instance sent, until their reply came back",
            self.command_client.clone(),
        );
        registry.register(
            "cohort_command_server_duration_seconds",
            "Duration of commands this instance ran",
            self.command_server.clone(),
        );
        registry.register(
            "cohort_events_processed",
            "Event deliveries this instance handled, by outcome",
            self.events.clone(),
        );
        registry.register(
            "cohort_events_redelivered",
            "Deliveries of an event after its first (a failure or an expired ack wait before)",
            self.redeliveries.clone(),
        );
        registry.register(
            "cohort_events_dead_lettered",
            "Events this instance moved to the dead letters",
            self.dead_letters.clone(),
        );
        registry.register(
            "cohort_events_pending",
            "Events not yet delivered to the subscription, read from the broker when scraped",
            self.pending.clone(),
        );
        registry.register(
            "db_client_operation_duration_seconds",
            "Duration of state store operations",
            self.store_durations.clone(),
        );
        registry.register(
            "cohort_state_errors",
            "State store operations that failed, by error kind",
            self.store_errors.clone(),
        );
        registry.register(
            "cohort_broker_connected",
            "1 while the message broker is connected, else 0",
            self.broker_connected.clone(),
        );
        registry.register(
            "cohort_state_store_connected",
            "1 while the state store answers, else 0",
            self.store_connected.clone(),
        );
        registry.register(
            "cohort_schema_drift",
            "Instances that serve a command of this one with other schemas (kind schema), or 1 \
             when no instance serves it (kind missing); schemas of an event of this one that \
             other instances have, where one side consumes it (kind event); as of the last drift \
             check",
            self.drift.clone(),
        );
        registry.register(
            "cohort_task_runs",
            "Runs of the task this instance made, by outcome",
            self.task_runs.clone(),
        );
        registry.register(
            "cohort_task_duration_seconds",
            "Duration of the task's runs on this instance",
            self.task_durations.clone(),
        );
        registry.register(
            "cohort_task_last_run_timestamp_seconds",
            "When the task's last finished run on this instance started, in Unix seconds",
            self.task_last_run.clone(),
        );
        registry.register(
            "cohort_task_next_run_timestamp_seconds",
            "The next tick at which this instance tries to run the task, in Unix seconds",
            self.task_next_run.clone(),
        );
        registry.register(
            "cohort_task_running",
            "1 while the task runs on this instance, else 0",
            self.task_running.clone(),
        );
        let build = Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            ("instance_id", instance_id.to_owned()),
        ]);
        registry.register("cohort_build", "Cohort's version and this instance", build);
        self
    }

    /// The durations of the route `method path`, whose success is `status`.
    pub(crate) fn route(
        &self,
        method: &'static str,
        path: &'static str,
        status: u16,
    ) -> RouteTimer {
        let labels = HttpLabels {
            http_request_method: method,
            http_route: path,
            http_response_status_code: status,
        };
        RouteTimer {
            success: self.http.get_or_create_owned(&labels),
            labels,
            family: self.http.clone(),
        }
    }

    /// The durations of `command` as this instance sends it.
    pub(crate) fn command_client(&self, command: CommandName) -> CommandTimer {
        CommandTimer::new(&self.command_client, command)
    }

    /// The durations of `command` as this instance runs it.
    pub(crate) fn command_server(&self, command: CommandName) -> CommandTimer {
        CommandTimer::new(&self.command_server, command)
    }

    /// The counts of `subscription`'s deliveries on this instance.
    pub(crate) fn subscription(&self, subscription: QualifiedName) -> SubscriptionCounters {
        let labels = SubscriptionLabels { subscription };
        let processed = EventLabels {
            subscription,
            outcome: OK,
        };
        SubscriptionCounters {
            processed: self.events.get_or_create_owned(&processed),
            events: self.events.clone(),
            redelivered: self.redeliveries.get_or_create_owned(&labels),
            dead_lettered: self.dead_letters.get_or_create_owned(&labels),
            subscription,
        }
    }

    /// Shows what the last drift check found, and nothing of the checks before.
    pub(crate) fn show_drift(&self, findings: &[Finding]) {
        self.drift.clear();
        for finding in findings {
            let labels = DriftLabels {
                about: finding.about(),
                kind: finding.kind(),
            };
            self.drift.get_or_create(&labels).inc();
        }
    }

    /// Counts a run of `task` that ended with `outcome` after `took`.
    pub(crate) fn task_ran(&self, task: QualifiedName, outcome: &TaskOutcome, took: Duration) {
        let runs = TaskRunLabels {
            task,
            outcome: outcome_of_task(outcome),
        };
        self.task_runs.get_or_create(&runs).inc();
        let labels = TaskLabels { task };
        let seconds = took.as_secs_f64();
        self.task_durations.get_or_create(&labels).observe(seconds);
    }

    /// Shows the times and state of `tasks`; a time not known yet stays absent.
    pub(crate) fn show_tasks(&self, tasks: &[TaskStatus]) {
        for status in tasks {
            let labels = TaskLabels {
                task: QualifiedName {
                    service: status.service,
                    name: status.name,
                },
            };
            self.task_running
                .get_or_create(&labels)
                .set(i64::from(status.running));
            // There from the first scrape, so that `rate()` has a beginning.
            let ok = TaskRunLabels {
                task: labels.task,
                outcome: OK,
            };
            self.task_runs.get_or_create_owned(&ok);
            self.task_durations.get_or_create_owned(&labels);
            for (family, at) in [
                (&self.task_last_run, status.last_run),
                (&self.task_next_run, status.next_run),
            ] {
                if let Some(at) = at {
                    family.get_or_create(&labels).set(unix_seconds(at));
                }
            }
        }
    }

    /// The text of every metric, in the Prometheus text format (version 0.0.4).
    fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing into a `String` does not fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }
}

/// The outcome label of a reply's status: `ok`, or the code of the error kind (`unavailable`,
/// `timeout`, `conflict`, ...): a fixed set.
pub(crate) fn outcome_of_status(status: u16) -> &'static str {
    match status {
        200..=299 => OK,
        status => ErrorKind::from_status(status).code(),
    }
}

/// The outcome label of a command's reply, or of its failure to get one.
pub(crate) fn outcome_of_reply(replied: &Result<Message, Error>) -> &'static str {
    match replied {
        Ok(reply) => outcome_of_status(reply.status()),
        Err(err) => err.kind().code(),
    }
}

/// The outcome label of a result.
pub(crate) fn outcome_of<T>(result: &Result<T, Error>) -> &'static str {
    match result {
        Ok(_) => OK,
        Err(err) => err.kind().code(),
    }
}

/// The outcome label of a task's run: `ok`, `error` or `lease_lost`.
pub(crate) fn outcome_of_task(outcome: &TaskOutcome) -> &'static str {
    match outcome {
        TaskOutcome::Succeeded => OK,
        TaskOutcome::Failed(_) => "error",
        TaskOutcome::LeaseLost => "lease_lost",
    }
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// The durations of one HTTP route.
pub(crate) struct RouteTimer {
    /// The route's success, resolved at start.
    success: Histogram,
    labels: HttpLabels,
    family: Durations<HttpLabels>,
}

impl RouteTimer {
    /// Records a request answered with `status` that started at `started`.
    pub(crate) fn observe(&self, status: u16, started: Instant) {
        let seconds = started.elapsed().as_secs_f64();
        if status == self.labels.http_response_status_code {
            return self.success.observe(seconds);
        }
        let labels = HttpLabels {
            http_response_status_code: status,
            ..self.labels.clone()
        };
        self.family.get_or_create(&labels).observe(seconds);
    }
}

/// The durations of one command on one side (sending or running it).
#[derive(Clone)]
pub(crate) struct CommandTimer {
    /// Its successes, resolved at start.
    success: Histogram,
    command: CommandName,
    family: Durations<CommandLabels>,
}

impl CommandTimer {
    fn new(family: &Durations<CommandLabels>, command: CommandName) -> CommandTimer {
        let labels = CommandLabels {
            command,
            outcome: OK,
        };
        CommandTimer {
            success: family.get_or_create_owned(&labels),
            command,
            family: family.clone(),
        }
    }

    /// Records a command that ended with `outcome` and started at `started`.
    pub(crate) fn observe(&self, outcome: &'static str, started: Instant) {
        self.record(outcome, started.elapsed());
    }

    /// Records a command that ended with `outcome` and took `took`.
    pub(crate) fn record(&self, outcome: &'static str, took: Duration) {
        let seconds = took.as_secs_f64();
        if outcome == OK {
            return self.success.observe(seconds);
        }
        let labels = CommandLabels {
            command: self.command,
            outcome,
        };
        self.family.get_or_create(&labels).observe(seconds);
    }
}

/// What one subscription's deliveries on this instance count into.
#[derive(Clone)]
pub(crate) struct SubscriptionCounters {
    processed: Counter,
    events: Family<EventLabels, Counter>,
    pub(crate) redelivered: Counter,
    pub(crate) dead_lettered: Counter,
    subscription: QualifiedName,
}

impl SubscriptionCounters {
    /// Counts a delivery the handler ended with `outcome`.
    pub(crate) fn processed(&self, outcome: &'static str) {
        if outcome == OK {
            self.processed.inc();
            return;
        }
        let labels = EventLabels {
            subscription: self.subscription,
            outcome,
        };
        self.events.get_or_create(&labels).inc();
    }
}

impl std::fmt::Debug for SubscriptionCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionCounters")
            .field("subscription", &self.subscription)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        Metrics::new("i1")
    }

    const ECHO: CommandName = CommandName {
        service: "demo",
        version: 2,
        name: "echo",
    };

    #[test]
    fn a_route_records_its_template_method_and_status() {
        let metrics = metrics();
        let route = metrics.route("GET", "/orders/{id}", 200);
        route.observe(200, Instant::now());
        route.observe(404, Instant::now());
        let text = metrics.encode();
        for status in [200, 404] {
            let series = format!(
                "http_server_request_duration_seconds_count{{http_request_method=\"GET\",http_route=\"/orders/{{id}}\",http_response_status_code=\"{status}\"}} 1"
            );
            assert!(text.contains(&series), "{series} in\n{text}");
        }
    }

    #[test]
    fn commands_are_named_by_service_version_and_name_with_their_outcome() {
        let metrics = metrics();
        let timer = metrics.command_server(ECHO);
        timer.observe(OK, Instant::now());
        timer.observe(outcome_of_status(503), Instant::now());
        let text = metrics.encode();
        for outcome in ["ok", "unavailable"] {
            let series = format!(
                "cohort_command_server_duration_seconds_count{{command=\"demo.v2.echo\",outcome=\"{outcome}\"}} 1"
            );
            assert!(text.contains(&series), "{series} in\n{text}");
        }
    }

    #[test]
    fn the_build_and_instance_are_an_info_metric() {
        let text = metrics().encode();
        let info = format!(
            "cohort_build_info{{version=\"{}\",instance_id=\"i1\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&info), "{text}");
    }

    #[test]
    fn a_task_shows_its_runs_by_outcome_and_only_the_times_it_knows() {
        let metrics = metrics();
        let task = QualifiedName {
            service: "audit",
            name: "sweep",
        };
        metrics.task_ran(task, &TaskOutcome::Succeeded, Duration::from_millis(3));
        metrics.task_ran(task, &TaskOutcome::Failed("no".to_owned()), Duration::ZERO);
        let status = TaskStatus {
            service: "audit",
            name: "sweep",
            schedule: crate::registry::TaskSchedule::Every { ms: 60_000 },
            next_run: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(90_500)),
            last_run: None,
            last_outcome: None,
            running: true,
            runs: 2,
        };
        metrics.show_tasks(&[status]);
        let text = metrics.encode();
        for series in [
            "cohort_task_runs_total{task=\"audit.sweep\",outcome=\"ok\"} 1",
            "cohort_task_runs_total{task=\"audit.sweep\",outcome=\"error\"} 1",
            "cohort_task_duration_seconds_count{task=\"audit.sweep\"} 2",
            "cohort_task_next_run_timestamp_seconds{task=\"audit.sweep\"} 90.5",
            "cohort_task_running{task=\"audit.sweep\"} 1",
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
        assert!(
            !text.contains("cohort_task_last_run_timestamp_seconds{"),
            "{text}"
        );
    }

    #[test]
    fn outcomes_are_a_fixed_set() {
        assert_eq!(outcome_of_status(201), "ok");
        assert_eq!(outcome_of_status(504), "timeout");
        assert_eq!(outcome_of_status(418), "bad_request");
        assert_eq!(outcome_of::<()>(&Err(Error::conflict("x"))), "conflict");
    }
}
