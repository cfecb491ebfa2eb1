//! Both ends of a command: sending one over the broker ([`Runtime::invoke`]) and running one that
//! arrived ([`command_handler`]), plus the delivery of events to subscriptions ([`event_handler`]).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, CatchUnwind};

use crate::broker::{Broker, EventHandler, RequestHandler};
use crate::config::Config;
use crate::context::Ctx;
use crate::error::{Error, ErrorKind};
use crate::message::{self, Message, Metadata, PROBLEM_JSON, Subjects};
use crate::registry::{CommandDescriptor, SubscriptionDescriptor};
use crate::state::StateStore;
use crate::timer::within;

/// What every handler of an instance shares: the broker, the store and the configuration.
pub(crate) struct Runtime {
    pub broker: Arc<dyn Broker>,
    pub store: Arc<dyn StateStore>,
    pub subjects: Subjects,
    pub instance_id: Arc<str>,
    pub config: Config,
    /// False once shutdown begins, so `/readyz` tells the load balancer to stop sending.
    pub accepting: AtomicBool,
}

/// The command to send: where it goes and how long it may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub service: &'a str,
    pub version: u32,
    pub name: &'a str,
    /// `{prefix}.cmd.{service}.v{version}.{name}`, made once by whoever sends it often.
    pub subject: &'a str,
    pub timeout_ms: Option<u64>,
}

impl Runtime {
    /// Sends a command and returns its reply, an error reply included. `Err` means the command
    /// never ran to an answer: nobody serves it, the deadline passed, or the broker is down.
    pub async fn invoke(
        &self,
        target: Target<'_>,
        payload: Bytes,
        mut meta: Metadata,
    ) -> Result<Message, Error> {
        let now = message::unix_millis(SystemTime::now());
        let own = own_deadline(&self.config, target.timeout_ms, now);
        // A call inside a call never outlives its caller's deadline.
        let deadline = meta.deadline.map_or(own, |outer| outer.min(own));
        // The executing instance allows a command its own timeout from when it arrives, so the
        // deadline travels only when it is earlier than that: most commands go without the header.
        meta.deadline = (deadline < own).then_some(deadline);
        let timeout = Duration::from_millis(deadline.saturating_sub(now));
        // No message id and no sender instance on commands: every header costs throughput on the
        // hot path, the traceparent already names the call, and the reply names the executor.
        meta.status = None;
        if timeout.is_zero() {
            return Err(deadline_passed(target.subject));
        }
        self.broker
            .request(target.subject, Message { meta, payload }, timeout)
            .await
            .map_err(|err| match err.kind() {
                ErrorKind::NoResponders => Error::new(
                    ErrorKind::NoResponders,
                    format!(
                        "no instance serves `{}.v{}.{}`",
                        target.service, target.version, target.name
                    ),
                )
                .with_code("no_responders"),
                _ => err,
            })
    }
}

/// When a command started at `now` (ms since the epoch) runs out of its own timeout: its
/// `timeout`, or the configured default. Caller and executing instance both count it this way.
fn own_deadline(config: &Config, timeout_ms: Option<u64>, now: u64) -> u64 {
    let timeout = timeout_ms.map_or(config.command_timeout, Duration::from_millis);
    now.saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
}

fn deadline_passed(what: &str) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("the deadline of `{what}` passed"),
    )
    .with_code("deadline_exceeded")
}

/// Turns a reply into the command's result.
pub(crate) fn reply_result(reply: &Message) -> Result<&Bytes, Error> {
    match reply.status() {
        200..=299 => Ok(&reply.payload),
        status => Err(Error::from_problem_json(status, &reply.payload)),
    }
}

/// The broker-facing handler of one command on this instance.
pub(crate) fn command_handler(
    runtime: Arc<Runtime>,
    command: &'static CommandDescriptor,
) -> RequestHandler {
    Arc::new(move |msg| execute(runtime.clone(), command, msg).boxed())
}

/// Runs one command that arrived here. What needs no waiting happens before the returned future
/// starts, so that the future holds only what lives across a wait: it is moved and boxed on every
/// command, and the message and its metadata would triple its size.
fn execute(
    runtime: Arc<Runtime>,
    command: &'static CommandDescriptor,
    msg: Message,
) -> impl Future<Output = Message> + Send + 'static {
    let started = start(runtime, command, msg);
    async move {
        let (ctx, run) = match started {
            Ok(started) => started,
            Err(reply) => return *reply,
        };
        // Measured when the command first waits: until then no timer can cut it off anyway.
        let time_left = || ctx.meta().time_left().unwrap_or_default();
        let outcome = match within(time_left, run).await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => Err(Error::internal(format!(
                "command `{}` panicked: {}",
                command.name,
                panic_message(panic.as_ref())
            ))),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "command `{}` did not finish before its deadline",
                    command.name
                ),
            )),
        };
        match outcome {
            Ok(body) => {
                let mut meta = reply_meta(&ctx);
                meta.status = Some(200);
                Message {
                    meta,
                    payload: body,
                }
            }
            Err(err) => error_reply(ctx.runtime(), err, Some(&ctx)),
        }
    }
}

/// A command's handler, started: a panic in it is caught and becomes its error.
type Running = CatchUnwind<AssertUnwindSafe<BoxFuture<'static, Result<Bytes, Error>>>>;

/// Gives the command its context and starts its handler; a command whose deadline passed on the
/// way here gets its error reply instead (boxed: rare, and large for the future that holds it).
fn start(
    runtime: Arc<Runtime>,
    command: &'static CommandDescriptor,
    msg: Message,
) -> Result<(Ctx, Running), Box<Message>> {
    let now = message::unix_millis(SystemTime::now());
    let meta = arrived(&runtime.config, command, msg.meta, now);
    if meta.deadline.is_some_and(|deadline| deadline <= now) {
        let subject = runtime
            .subjects
            .command(command.service, command.version, command.name);
        return Err(Box::new(error_reply(
            &runtime,
            deadline_passed(&subject),
            None,
        )));
    }
    let ctx = Ctx::new(runtime, command.service, meta);
    let run = AssertUnwindSafe((command.handler)(ctx.clone(), msg.payload)).catch_unwind();
    Ok((ctx, run))
}

/// The metadata of a command as it starts here, with the deadline a caller may leave out: the
/// command's own timeout from now (what the caller allows it, give or take the trip over the
/// broker). A trace the caller did not send starts in [`Ctx`], when something first needs it.
fn arrived(config: &Config, command: &CommandDescriptor, mut meta: Metadata, now: u64) -> Metadata {
    meta.deadline
        .get_or_insert_with(|| own_deadline(config, command.timeout_ms, now));
    meta
}

/// A reply carrying `err` as a problem document. A 500 is logged here with its details, under a
/// trace id the client gets to quote: the command's, when it started (`ctx`).
fn error_reply(runtime: &Runtime, err: Error, ctx: Option<&Ctx>) -> Message {
    let err = log_if_internal(ctx.map(Ctx::trace_id), err, "command failed");
    let mut meta = match ctx {
        Some(ctx) => reply_meta(ctx),
        None => Metadata {
            instance: Some(String::from(&*runtime.instance_id)),
            ..Metadata::default()
        },
    };
    meta.status = Some(err.status());
    meta.content_type = Some(PROBLEM_JSON.to_owned());
    Message {
        meta,
        payload: Bytes::from(err.to_problem_json()),
    }
}

/// Logs a 500's details and gives it a trace id, the request's (`trace_id`) or a new one; other
/// errors pass unchanged.
pub(crate) fn log_if_internal(trace_id: Option<&str>, err: Error, what: &str) -> Error {
    if err.kind() != ErrorKind::Internal {
        return err;
    }
    let trace_id = trace_id.map_or_else(|| message::random_hex(16), str::to_owned);
    tracing::error!(trace_id = %trace_id, error = %err, "{what}");
    err.with_trace_id(trace_id)
}

fn reply_meta(ctx: &Ctx) -> Metadata {
    let mut meta = Metadata {
        instance: Some(ctx.instance_id().to_owned()),
        ..Metadata::default()
    };
    ctx.session_effects().write_to(&mut meta);
    meta
}

/// The broker-facing handler of one subscription on this instance. A panic counts as a failure,
/// so the event is redelivered (and dead-lettered if it keeps failing), and the instance goes on.
pub(crate) fn event_handler(
    runtime: Arc<Runtime>,
    subscription: &'static SubscriptionDescriptor,
) -> EventHandler {
    Arc::new(move |msg: Message| {
        let ctx = Ctx::new(runtime.clone(), subscription.service, msg.meta);
        let run = AssertUnwindSafe((subscription.handler)(ctx.clone(), msg.payload)).catch_unwind();
        async move {
            let result = run.await.unwrap_or_else(|panic| {
                Err(Error::internal(format!(
                    "subscription `{}` panicked: {}",
                    subscription.name,
                    panic_message(panic.as_ref())
                )))
            });
            result.map_err(|err| log_if_internal(Some(ctx.trace_id()), err, "subscription failed"))
        }
        .boxed()
    })
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

impl Runtime {
    /// Whether this instance should get traffic: not shutting down, broker and store answering.
    pub async fn is_ready(&self) -> Result<(), Error> {
        if !self.accepting.load(Ordering::Relaxed) {
            return Err(Error::unavailable("the instance is shutting down"));
        }
        if !self.broker.is_ready() {
            return Err(Error::unavailable("the broker is not connected"));
        }
        self.store.ping().await
    }
}
