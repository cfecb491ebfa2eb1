//! What a broker implements: the contract [`Broker`] and the types it works with. Cohort ships
//! two ([`MemoryBroker`](super::MemoryBroker), [`NatsBroker`](super::NatsBroker)); a third (another
//! messaging system) implements [`Broker`] and proves itself with
//! `cohort::testing::run_broker_suite`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use super::stats::{CommandStats, Counts, EndpointStats, SubscriptionStats};
pub use crate::message::{Message, Metadata, Subjects, header};

use crate::config::Config;
use crate::error::{Error, ErrorKind};
use crate::metrics::SubscriptionCounters;

/// Runs one command on this instance. It never fails: an error is a reply with an error status.
/// Calling it should only start the command: brokers call it where they take requests (the
/// embedded one under a read lock), and the work belongs in the future it returns.
pub type RequestHandler = Arc<dyn Fn(Message) -> BoxFuture<'static, Message> + Send + Sync>;

/// Handles one event delivery. `Err` asks for the event again later (with backoff).
pub type EventHandler = Arc<dyn Fn(Message) -> BoxFuture<'static, Result<(), Error>> + Send + Sync>;

/// A command this instance serves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Endpoint {
    /// The service it belongs to.
    pub service: String,
    /// Its version.
    pub version: u32,
    /// Its name.
    pub name: String,
    /// What it does (the function's doc comment).
    pub description: String,
    /// `{prefix}.cmd.{service}.v{version}.{name}`
    pub subject: String,
    /// `{prefix}.{service}.v{version}.{name}`: shared by every instance that serves it.
    pub queue_group: String,
    /// Announced with the endpoint in the NATS micro protocol (the input and output schemas).
    pub metadata: HashMap<String, String>,
}

impl Endpoint {
    /// The endpoint of command `name`, version `version`, of `service`, with its subject and
    /// queue group under `subjects`; no description and no metadata.
    pub fn new(subjects: &Subjects, service: &str, version: u32, name: &str) -> Endpoint {
        Endpoint {
            service: service.to_owned(),
            version,
            name: name.to_owned(),
            description: String::new(),
            subject: subjects.command(service, version, name),
            queue_group: subjects.queue_group(service, version, name),
            metadata: HashMap::new(),
        }
    }
}

/// A command as an instance announces it to the others: who serves it, and the hash of its
/// schemas, which instances compare to find version drift.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Announced {
    /// The instance that serves it: its `cohort.instance`, or the service's name and id for a
    /// service that is no Cohort instance.
    pub instance: String,
    /// `{prefix}.cmd.{service}.v{version}.{name}`
    pub subject: String,
    /// The hash of its input and output schemas (`cohort.schema`); `None` when not announced.
    pub schema: Option<String>,
}

impl Announced {
    /// `subject`, served by `instance` with the schemas of hash `schema`.
    pub fn new(instance: &str, subject: &str, schema: Option<&str>) -> Announced {
        Announced {
            instance: instance.to_owned(),
            subject: subject.to_owned(),
            schema: schema.map(str::to_owned),
        }
    }
}

/// An event as an instance announces it for the drift check: the hash of its JSON schema, and
/// which of the instance's subscriptions consume it (none when its binary only has the type, to
/// emit it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EventSchema {
    /// `{prefix}.evt.*.{event}`: the subjects of the event, whichever service emits it.
    pub subject: String,
    /// The hash of its JSON schema.
    pub schema: String,
    /// The subscriptions of the instance that consume it, as `{service}.{subscription}`.
    #[serde(default)]
    pub subscriptions: Vec<String>,
}

impl EventSchema {
    /// The event of subjects `subject` with the schema of hash `schema`, consumed by
    /// `subscriptions`.
    pub fn new(subject: &str, schema: &str, subscriptions: &[&str]) -> EventSchema {
        EventSchema {
            subject: subject.to_owned(),
            schema: schema.to_owned(),
            subscriptions: subscriptions.iter().map(|&s| s.to_owned()).collect(),
        }
    }

    /// The event's name: the last token of its subjects.
    pub fn event(&self) -> &str {
        self.subject.rsplit('.').next().unwrap_or_default()
    }
}

/// An event as another instance announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AnnouncedEvent {
    /// The instance that announces it, named like [`Announced::instance`].
    pub instance: String,
    /// The event.
    pub event: EventSchema,
}

/// What every instance announces about its commands and events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Announcements {
    /// Every command every instance serves.
    pub commands: Vec<Announced>,
    /// Every event every instance knows or consumes, with a schema.
    pub events: Vec<AnnouncedEvent>,
}

/// How a subscription consumes events.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SubscriptionSpec {
    /// The service it belongs to.
    pub service: String,
    /// Its name.
    pub name: String,
    /// The event subjects it wants, such as `cohort.evt.*.order_placed`.
    pub filter_subject: String,
    /// `{service}__{subscription}`: the durable consumer every instance shares.
    pub durable: String,
    /// Every instance gets every event, instead of one instance each event.
    pub every_instance: bool,
    /// Where an every-instance subscription starts each time its instance subscribes.
    pub start: StartPosition,
    /// After this many failed deliveries the event goes to `dead_letter_subject`.
    pub max_attempts: u32,
    /// Wait before the n-th redelivery (the last entry repeats).
    pub backoff: Vec<Duration>,
    /// How long a delivery may stay unacknowledged before the broker gives it to another
    /// instance (the holder crashed).
    pub ack_wait: Duration,
    /// Where an event goes when its attempts are spent: `{prefix}.dlq.{service}.{name}`.
    pub dead_letter_subject: String,
    /// Where the broker reports redeliveries and dead letters, for the metrics.
    pub report: DeliveryReport,
}

/// Where an every-instance subscription starts each time its instance subscribes (at every start
/// of the instance), as `#[subscription(every_instance, start = "...")]` wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartPosition {
    /// Where this instance's consumer left off, if the broker still keeps it; new events
    /// otherwise. With NATS it is kept 5 minutes after the instance is gone, under its instance
    /// id; the embedded broker keeps none. A shared subscription always resumes.
    #[default]
    Resume,
    /// The events published from now on.
    New,
    /// The last `n` stored events this subscription takes (of its event type), then new ones.
    Last(u64),
    /// The stored events this subscription takes that were published within this long before
    /// now, then new ones.
    Since(Duration),
}

/// Where a broker reports what it did with a subscription's events, for the metrics: it calls
/// [`DeliveryReport::redelivered`] for every delivery of an event after its first, and
/// [`DeliveryReport::dead_lettered`] for every event it stored in the dead letters. The default
/// reports nowhere.
#[derive(Debug, Clone, Default)]
pub struct DeliveryReport {
    counters: Option<SubscriptionCounters>,
}

impl DeliveryReport {
    pub(crate) fn to(counters: SubscriptionCounters) -> DeliveryReport {
        DeliveryReport {
            counters: Some(counters),
        }
    }

    /// An event is delivered again (its handler failed, or its ack wait ran out).
    pub fn redelivered(&self) {
        if let Some(counters) = &self.counters {
            counters.redelivered.inc();
        }
    }

    /// An event went to the dead letters.
    pub fn dead_lettered(&self) {
        if let Some(counters) = &self.counters {
            counters.dead_lettered.inc();
        }
    }
}

impl SubscriptionSpec {
    /// The subscription `name` of `service` to the event named `event`, with the defaults of
    /// [`crate::Config`] for its attempts, backoff and ack wait.
    pub fn new(subjects: &Subjects, service: &str, name: &str, event: &str) -> SubscriptionSpec {
        let defaults = Config::default();
        SubscriptionSpec {
            service: service.to_owned(),
            name: name.to_owned(),
            filter_subject: subjects.event_filter(event),
            durable: Subjects::durable(service, name),
            every_instance: false,
            start: StartPosition::Resume,
            max_attempts: defaults.event_max_attempts,
            backoff: defaults.event_backoff,
            ack_wait: defaults.event_ack_wait,
            dead_letter_subject: subjects.dead_letter(service, name),
            report: DeliveryReport::default(),
        }
    }

    /// How long to wait before delivering the event again after its `attempt`-th delivery
    /// (1-based) failed with `err`; `None` when it goes to the dead letters instead: its attempts
    /// are spent, or it can never succeed (it does not decode as its type: a 400 or 422).
    pub fn retry_after(&self, attempt: u32, err: &Error) -> Option<Duration> {
        let hopeless = matches!(err.kind(), ErrorKind::BadRequest | ErrorKind::Invalid);
        (!hopeless && attempt < self.max_attempts).then(|| self.backoff_after(attempt))
    }

    /// The wait before redelivery after `attempt` failed deliveries (1-based).
    pub(crate) fn backoff_after(&self, attempt: u32) -> Duration {
        let index = (attempt.max(1) as usize - 1).min(self.backoff.len().saturating_sub(1));
        self.backoff
            .get(index)
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

/// The lifetime of an instance's work: brokers spawn every loop and every delivery on `tasks`,
/// and stop taking new work when `stop` is cancelled, so shutdown can wait for what is in flight.
#[derive(Debug, Clone, Default)]
pub struct Work {
    /// Cancelled when the instance stops taking new work.
    pub stop: CancellationToken,
    /// Every loop and delivery the broker runs for the instance.
    pub tasks: TaskTracker,
}

/// The contract of a broker: see the module docs.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Sends a command and waits for its reply. Fails at once with
    /// [`crate::ErrorKind::NoResponders`] when no instance serves
    /// `subject`, and with [`crate::ErrorKind::Timeout`] after `timeout`.
    ///
    /// A broker whose executing instance can be lost apart from the caller (it dies, hangs, or
    /// the connection between them drops) must find that out within 3 seconds, not at the
    /// timeout, and fail with [`crate::ErrorKind::Unavailable`] and the code `executor_lost`:
    /// the command may have run, in full or in part. A command that runs long but whose instance
    /// is alive must still get its reply. The NATS broker does it with progress messages
    /// (`Cohort-Status: 100`); the embedded broker runs the command inside the caller's own
    /// process, where it cannot be lost alone, and never fails this way.
    ///
    /// Not an `async fn`: a broker can take the message apart before the request waits, so that
    /// the future of every command in flight does not carry it.
    fn request<'a>(
        &'a self,
        subject: &'a str,
        msg: Message,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, Error>>;

    /// Publishes an event and returns once the broker has stored it.
    async fn publish(&self, subject: &str, msg: Message) -> Result<(), Error>;

    /// Serves these commands on this instance until `work.stop` is cancelled.
    async fn serve(
        &self,
        endpoints: Vec<(Endpoint, RequestHandler)>,
        work: &Work,
    ) -> Result<(), Error>;

    /// Consumes a subscription on this instance until `work.stop` is cancelled: at-least-once,
    /// acknowledged after the handler succeeds, redelivered with backoff when it fails, dead-lettered
    /// after `max_attempts`. An every-instance subscription whose `start` is not
    /// [`StartPosition::Resume`] first gets the stored events of that position, on every call.
    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: EventHandler,
        work: &Work,
    ) -> Result<(), Error>;

    /// Whether other instances share this broker (false for the embedded one).
    fn is_distributed(&self) -> bool;

    /// Whether the broker can take work now (for `/readyz`).
    fn is_ready(&self) -> bool;

    /// What every instance serving commands through this broker reports about them, gathered
    /// for at most `window`. Empty for a broker that does not count them (the embedded one: the
    /// runtime counts for it when the dashboard asks).
    async fn command_stats(&self, window: Duration) -> Result<Vec<CommandStats>, Error> {
        let _ = window;
        Ok(Vec::new())
    }

    /// Tells the other instances, until `work.stop` is cancelled, which events this instance
    /// knows and consumes, and their schema hashes. Nothing to do for a broker of one instance
    /// (the embedded one), where versions cannot drift apart.
    async fn announce_events(&self, events: Vec<EventSchema>, work: &Work) -> Result<(), Error> {
        let _ = (events, work);
        Ok(())
    }

    /// The commands and events every instance on this broker announces, this one included,
    /// gathered for at most `window`. Empty for a broker of one instance (the embedded one).
    async fn announced(&self, window: Duration) -> Result<Announcements, Error> {
        let _ = window;
        Ok(Announcements::default())
    }

    /// The backlog and dead letters of `spec`'s consumer; `None` for a broker that does not keep
    /// them.
    async fn subscription_stats(
        &self,
        spec: &SubscriptionSpec,
    ) -> Result<Option<SubscriptionStats>, Error> {
        let _ = spec;
        Ok(None)
    }

    /// Flushes what is buffered. Called at shutdown, after in-flight work has finished.
    async fn close(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_until_the_attempts_are_spent() {
        let mut spec = SubscriptionSpec::new(&Subjects::default(), "s", "n", "e");
        spec.max_attempts = 4;
        spec.backoff = vec![Duration::from_secs(1), Duration::from_secs(5)];
        let failed = Error::internal("boom");
        let waits: Vec<_> = (1..=4).map(|n| spec.retry_after(n, &failed)).collect();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(waits, [secs(1), secs(5), secs(5), None]);
    }

    #[test]
    fn an_event_that_does_not_decode_is_never_retried() {
        let spec = SubscriptionSpec::new(&Subjects::default(), "s", "n", "e");
        assert_eq!(
            spec.retry_after(1, &Error::invalid("qty", "not a number")),
            None
        );
        assert_eq!(spec.retry_after(1, &Error::bad_request("not JSON")), None);
    }
}
