//! The broker: how commands reach an instance that runs them, and how events reach subscribers.
//!
//! Two implementations share one contract (and one conformance suite in `cohort::testing`):
//! [`MemoryBroker`], the embedded default for a single instance, and [`NatsBroker`], for many.

mod memory;
mod nats;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use memory::MemoryBroker;
pub use nats::{NatsBroker, StreamSettings};

use crate::error::{Error, ErrorKind};
use crate::message::Message;

/// Runs one command on this instance. It never fails: an error is a reply with an error status.
/// Calling it should only start the command: brokers call it where they take requests (the
/// embedded one under a read lock), and the work belongs in the future it returns.
pub type RequestHandler = Arc<dyn Fn(Message) -> BoxFuture<'static, Message> + Send + Sync>;

/// Handles one event delivery. `Err` asks for the event again later (with backoff).
pub type EventHandler = Arc<dyn Fn(Message) -> BoxFuture<'static, Result<(), Error>> + Send + Sync>;

/// A command this instance serves.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub service: String,
    pub version: u32,
    pub name: String,
    pub description: String,
    /// `{prefix}.cmd.{service}.v{version}.{name}`
    pub subject: String,
    /// `{prefix}.{service}.v{version}.{name}`: shared by every instance that serves it.
    pub queue_group: String,
    /// Announced with the endpoint in the NATS micro protocol (the input and output schemas).
    pub metadata: HashMap<String, String>,
}

/// How a subscription consumes events.
#[derive(Debug, Clone)]
pub struct SubscriptionSpec {
    pub service: String,
    pub name: String,
    /// The event subjects it wants, such as `cohort.evt.*.order_placed`.
    pub filter_subject: String,
    /// `{service}__{subscription}`: the durable consumer every instance shares.
    pub durable: String,
    /// Every instance gets every event, instead of one instance each event.
    pub every_instance: bool,
    /// After this many failed deliveries the event goes to `dead_letter_subject`.
    pub max_attempts: u32,
    /// Wait before the n-th redelivery (the last entry repeats).
    pub backoff: Vec<Duration>,
    /// How long a delivery may stay unacknowledged before the broker gives it to another
    /// instance (the holder crashed).
    pub ack_wait: Duration,
    pub dead_letter_subject: String,
}

impl SubscriptionSpec {
    /// The wait before redelivery after `attempt` failed deliveries (1-based).
    pub fn backoff_after(&self, attempt: u32) -> Duration {
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
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
}

/// The contract of a broker. See the module docs.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Sends a command and waits for its reply. Fails at once with
    /// [`ErrorKind::NoResponders`](crate::ErrorKind::NoResponders) when no instance serves
    /// `subject`, and with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) after `timeout`.
    async fn request(
        &self,
        subject: &str,
        msg: Message,
        timeout: Duration,
    ) -> Result<Message, Error>;

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
    /// after `max_attempts`.
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

    /// Flushes what is buffered. Called at shutdown, after in-flight work has finished.
    async fn close(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// The error of a request that no instance serves.
pub(crate) fn no_responders(subject: &str) -> Error {
    Error::new(
        ErrorKind::NoResponders,
        format!("no instance serves `{subject}`"),
    )
    .with_code("no_responders")
}

/// Whether redelivering an event can help after its handler failed with `err`. An event that does
/// not decode as its type (400, 422) never will: it goes to the dead letters at once.
pub fn worth_retrying(err: &Error) -> bool {
    !matches!(err.kind(), ErrorKind::BadRequest | ErrorKind::Invalid)
}

/// Whether a NATS subject matches a pattern with `*` (one token) and `>` (the rest).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(subject_matches("a.b.c", "a.b.c"));
    }
}
