//! What every handler of an instance shares, and the calling side of a command: where it goes
//! ([`Target`]), its deadline, and sending it over the broker ([`Runtime::invoke`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::future::Either;
use tracing::field::Empty;

use crate::broker::EXECUTOR_LOST;
use crate::broker::spi::Broker;
use crate::config::Config;
use crate::contract::Command;
use crate::dashboard::Dashboard;
use crate::error::{Error, ErrorKind};
use crate::message::{self, Message, Metadata, PROBLEM_JSON, Subjects};
use crate::metrics::{CommandName, CommandTimer, Metrics, outcome_of_reply};
use crate::spans::{self, SPANS};
use crate::state::spi::StateStore;

/// What every handler of an instance shares: the broker, the store and the configuration.
pub(crate) struct Runtime {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) store: Arc<dyn StateStore>,
    pub(crate) subjects: Subjects,
    /// The namespace of each service's keys and the sessions', made once.
    pub(crate) namespaces: Namespaces,
    pub(crate) instance_id: Arc<str>,
    pub(crate) config: Config,
    /// The app's own settings, loaded at start.
    pub(crate) settings: crate::settings::AppSettings,
    /// False once shutdown begins, so `/readyz` tells the load balancer to stop sending.
    pub(crate) accepting: AtomicBool,
    /// What the dashboard keeps, when it is on.
    pub(crate) dashboard: Option<Arc<Dashboard>>,
    /// What the instance measures; `None` with `COHORT_METRICS=off`.
    pub(crate) metrics: Option<Metrics>,
    /// What this instance knows of its tasks; never touched on a request's path.
    pub(crate) tasks: crate::task::TaskBoard,
    /// What the last version drift check found.
    pub(crate) drift: crate::drift::DriftBoard,
    /// Removes the events this instance published from their outboxes.
    pub(crate) sweeper: crate::sweeper::Sweeper,
}

/// A command as a caller addresses it: its names, its subject and its own timeout.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) service: &'static str,
    pub(crate) version: u32,
    pub(crate) name: &'static str,
    /// `{prefix}.cmd.{service}.v{version}.{name}`
    pub(crate) subject: String,
    pub(crate) timeout_ms: Option<u64>,
    /// Declared idempotent: it may be sent again when the instance running it is lost.
    pub(crate) idempotent: bool,
}

impl Target {
    /// The one place a command's subject is made.
    pub(crate) fn new(
        subjects: &Subjects,
        service: &'static str,
        version: u32,
        name: &'static str,
        timeout_ms: Option<u64>,
        idempotent: bool,
    ) -> Target {
        Target {
            subject: subjects.command(service, version, name),
            service,
            version,
            name,
            timeout_ms,
            idempotent,
        }
    }

    /// The command as a metrics label.
    pub(crate) fn command_name(&self) -> CommandName {
        CommandName {
            service: self.service,
            version: self.version,
            name: self.name,
        }
    }

    /// The target of the typed command `C`.
    pub(crate) fn of<C: Command>(subjects: &Subjects) -> Target {
        Target::new(
            subjects,
            C::SERVICE,
            C::VERSION,
            C::NAME,
            C::TIMEOUT_MS,
            C::IDEMPOTENT,
        )
    }

    /// When the command, started at `now` (ms since the epoch), runs out of its own timeout: its
    /// `timeout`, or the configured default. Caller and executing instance both count it this way.
    pub(crate) fn own_deadline(&self, config: &Config, now: u64) -> u64 {
        let timeout = self
            .timeout_ms
            .map_or(config.command_timeout, Duration::from_millis);
        now.saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
    }

    /// The error of a command whose deadline passed before it could finish.
    pub(crate) fn deadline_passed(&self) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "the deadline of `{}.v{}.{}` passed",
                self.service, self.version, self.name
            ),
        )
    }
}

impl Runtime {
    /// Sends a command and returns its reply, an error reply included. `Err` means the command
    /// never ran to an answer: nobody serves it, the deadline passed, or the broker is down.
    ///
    /// The call has its span, a child of the caller's (`meta`'s traceparent), whose id the
    /// command carries: the span of its run is that span's child. When nothing reads spans in
    /// detail ([`spans::detailed`]), the command carries the caller's span id instead.
    ///
    /// Like every step below it, it does at once what needs no waiting and returns a future
    /// that holds only what lives across the wait: a message held by each step's future would be
    /// copied into each, on every command.
    pub(crate) fn invoke<'a>(
        &'a self,
        target: &'a Target,
        payload: Bytes,
        mut meta: Metadata,
    ) -> impl Future<Output = Result<Message, Error>> + Send + 'a {
        if !spans::detailed() {
            return Either::Left(self.send_command(target, payload, meta));
        }
        let traced = spans::open(
            &mut meta.traceparent,
            |_| {
                tracing::info_span!(
                    target: SPANS,
                    "call",
                    otel.name = Empty,
                    otel.kind = "client",
                    cohort.command = target.name,
                    cohort.status = Empty,
                )
            },
            || format!("call {}.{}", target.service, target.name),
        );
        let sending = self.send_command(target, payload, meta);
        let call = async move {
            let reply = sending.await;
            let status = reply.as_ref().map_or_else(Error::status, Message::status);
            spans::record("cohort.status", status);
            reply
        };
        Either::Right(traced.run(call))
    }

    fn send_command<'a>(
        &'a self,
        target: &'a Target,
        payload: Bytes,
        mut meta: Metadata,
    ) -> impl Future<Output = Result<Message, Error>> + Send + 'a {
        let now = unix_now();
        let own = target.own_deadline(&self.config, now);
        // A call inside a call never outlives its caller's deadline.
        let deadline = meta.deadline.map_or(own, |outer| outer.min(own));
        // The executing instance allows a command its own timeout from when it arrives, so the
        // deadline travels only when it is earlier than that: most commands go without the header.
        meta.deadline = (deadline < own).then_some(deadline);
        let timeout = Duration::from_millis(deadline.saturating_sub(now));
        // No message id and no sender instance on commands: every header costs throughput on the
        // hot path, the traceparent already names the call, and the reply names the executor.
        meta.status = None;
        let msg = Message {
            meta: Box::new(meta),
            payload,
        };
        if target.idempotent || msg.meta.idempotency_key.is_some() {
            // Boxed: rare, and every request's future would otherwise make room for it.
            return Either::Left(Box::pin(
                self.send_resending(target, msg, deadline, timeout),
            ));
        }
        Either::Right(self.send(target, msg, timeout))
    }

    /// [`Runtime::invoke`], measured by `timer` (the command's durations as a client) when
    /// metrics are on.
    pub(crate) fn invoke_timed<'a>(
        &'a self,
        target: &'a Target,
        timer: Option<&'a CommandTimer>,
        payload: Bytes,
        meta: Metadata,
    ) -> impl Future<Output = Result<Message, Error>> + Send + 'a {
        let sent = timer.map(|_| Instant::now());
        let invoked = self.invoke(target, payload, meta);
        async move {
            let replied = invoked.await;
            if let (Some(timer), Some(sent)) = (timer, sent) {
                timer.observe(outcome_of_reply(&replied), sent);
            }
            replied
        }
    }

    /// Sends a command that may run twice, and sends it once more when the instance running it
    /// is lost.
    ///
    /// Not an `async fn`, which would hold the message twice more while its first copy is sent.
    fn send_resending<'a>(
        &'a self,
        target: &'a Target,
        msg: Message,
        deadline: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<Message, Error>> + Send + 'a {
        let again = msg.clone();
        let first = self.send(target, msg, timeout);
        async move {
            let err = match first.await {
                Err(err) if err.code() == EXECUTOR_LOST => err,
                result => return result,
            };
            let left = Duration::from_millis(deadline.saturating_sub(unix_now()));
            tracing::info!(command = %target.subject, "the instance running an idempotent command was lost; sending it again");
            match self.send(target, again, left).await {
                // Nobody else serves it: what the caller must learn is that its executor died.
                Err(resent) if resent.kind() == ErrorKind::NoResponders => Err(err),
                result => result,
            }
        }
    }

    fn send<'a>(
        &'a self,
        target: &'a Target,
        msg: Message,
        timeout: Duration,
    ) -> impl Future<Output = Result<Message, Error>> + Send + 'a {
        // The broker takes the message now, into the future it returns.
        let request =
            (!timeout.is_zero()).then(|| self.broker.request(&target.subject, msg, timeout));
        async move {
            let Some(request) = request else {
                return Err(target.deadline_passed());
            };
            request.await.map_err(|err| match err.kind() {
                ErrorKind::NoResponders => Error::new(
                    ErrorKind::NoResponders,
                    format!(
                        "no instance serves `{}.v{}.{}`",
                        target.service, target.version, target.name
                    ),
                ),
                _ => err,
            })
        }
    }

    /// The metadata of a reply this instance gives outside any command's context.
    pub(crate) fn reply_meta(&self) -> Metadata {
        Metadata {
            instance: Some(String::from(&*self.instance_id)),
            ..Metadata::default()
        }
    }

    /// The namespace of the keys of `area` (a service, the sessions, a task): see [`Namespaces`].
    pub(crate) fn namespace(&self, area: &str) -> Arc<str> {
        self.namespaces.of(area)
    }

    /// The full key of `key` in `service`'s state.
    pub(crate) fn state_key(&self, service: &str, key: &str) -> String {
        joined(&[&self.namespace(service), ":", key])
    }

    /// The key of the outbox that `service`'s units of work write their events to: in the
    /// service's namespace, as the unit's other keys, so that one script writes them all.
    pub(crate) fn outbox_key(&self, service: &str) -> String {
        self.state_key(service, "outbox")
    }

    /// Whether this instance should get traffic: not shutting down, broker and store answering.
    pub(crate) async fn is_ready(&self) -> Result<(), Error> {
        if !self.accepting.load(Ordering::Relaxed) {
            return Err(Error::unavailable("the instance is shutting down"));
        }
        if !self.broker.is_ready() {
            return Err(Error::broker_unavailable("the broker is not connected"));
        }
        self.store.ping().await
    }
}

/// The namespace of the keys of each area (a service, the sessions, a task): `{prefix:area}`. The
/// braces are a Redis Cluster hash tag, so that all keys of one area live in one slot and a unit of
/// work can change them in one atomic script. Those of the app's services and the sessions are
/// made once: a handler asks for its service's on every use of its state.
pub(crate) struct Namespaces {
    prefix: String,
    made: Vec<(&'static str, Arc<str>)>,
}

impl Namespaces {
    pub(crate) fn new(prefix: &str, areas: impl IntoIterator<Item = &'static str>) -> Namespaces {
        let made = (areas.into_iter())
            .map(|area| (area, namespace(prefix, area)))
            .collect();
        Namespaces {
            prefix: prefix.to_owned(),
            made,
        }
    }

    /// The namespace of `area`.
    pub(crate) fn of(&self, area: &str) -> Arc<str> {
        match self.made.iter().find(|(made, _)| *made == area) {
            Some((_, namespace)) => namespace.clone(),
            None => namespace(&self.prefix, area),
        }
    }
}

fn namespace(prefix: &str, area: &str) -> Arc<str> {
    joined(&["{", prefix, ":", area, "}"]).into()
}

/// The pieces of a key or subject, one after the other, in one allocation: `format!` grows its
/// string as it goes, on every state access and emit.
pub(crate) fn joined(pieces: &[&str]) -> String {
    let mut key = String::with_capacity(pieces.iter().map(|piece| piece.len()).sum());
    pieces.iter().for_each(|piece| key.push_str(piece));
    key
}

fn unix_now() -> u64 {
    message::unix_millis(SystemTime::now())
}

/// A reply carrying `err` as a problem document, with `meta` (who answers, session effects).
pub(crate) fn problem_reply(mut meta: Metadata, err: &Error) -> Message {
    meta.status = Some(err.status());
    meta.content_type = Some(PROBLEM_JSON.to_owned());
    Message {
        meta: Box::new(meta),
        payload: Bytes::from(err.to_problem_json()),
    }
}

/// Turns a reply into the command's result.
pub(crate) fn reply_result(reply: &Message) -> Result<&Bytes, Error> {
    match reply.status() {
        200..=299 => Ok(&reply.payload),
        status => Err(Error::from_problem_json(status, &reply.payload)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SESSIONS;

    #[test]
    fn a_known_area_shares_its_namespace_and_another_gets_one_made() {
        let namespaces = Namespaces::new("app", ["orders", SESSIONS]);
        let orders = namespaces.of("orders");
        assert_eq!(&*orders, "{app:orders}");
        assert!(Arc::ptr_eq(&orders, &namespaces.of("orders")));
        assert_eq!(&*namespaces.of(SESSIONS), "{app:session}");
        assert_eq!(
            &*namespaces.of("task:orders.sweep"),
            "{app:task:orders.sweep}"
        );
    }

    #[test]
    fn joined_puts_the_pieces_one_after_the_other() {
        assert_eq!(
            joined(&["{app:orders}", ":", "stock"]),
            "{app:orders}:stock"
        );
        assert_eq!(joined(&[]), "");
    }
}
