//! The executing side: running a command that arrived here ([`command_handler`]) and delivering
//! events to subscriptions ([`event_handler`]).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, CatchUnwind};
use tracing::field::Empty;

use crate::broker::spi::{EventHandler, RequestHandler};
use crate::constraints::InputRules;
use crate::context::Ctx;
use crate::dashboard::Observer;
use crate::error::{Error, ErrorKind};
use crate::idempotency::{Claim, Claimed};
use crate::message::{self, Message, Metadata};
use crate::metrics::{CommandTimer, outcome_of, outcome_of_status};
use crate::registry::{CommandDescriptor, CommandFn, GuardFn, SubscriptionDescriptor};
use crate::runtime::{Runtime, Target, problem_reply};
use crate::spans::{self, Scope, TraceId, cohort_span};
use crate::timer::within;

/// One command as this instance serves it.
struct Served {
    command: &'static CommandDescriptor,
    target: Target,
    /// Whether this side bounds the command by its deadline. The embedded broker runs the command
    /// inside the caller's own bounded wait, so a second timer there would only cost.
    timed: bool,
    watchers: Watchers,
    /// What its input must be before the handler decodes it.
    rules: Arc<InputRules>,
}

/// What each run of one command here is reported to, timed once for all of them.
struct Watchers {
    /// The dashboard, when it is on.
    observer: Option<Observer>,
    /// The command's durations as this instance runs it, when metrics are on.
    durations: Option<CommandTimer>,
}

/// One run that is watched: when it started, and its trace for the dashboard.
struct Watch {
    started: Instant,
    trace: Option<TraceId>,
}

impl Watchers {
    /// The watch of a run with `meta` starting now, if anything watches it.
    fn watch(&self, meta: &Metadata) -> Option<Watch> {
        if self.observer.is_none() && self.durations.is_none() {
            return None;
        }
        let trace = self.observer.as_ref().and(meta.trace_id()).map(TraceId::of);
        Some(Watch {
            started: Instant::now(),
            trace,
        })
    }

    /// Reports a watched run that answered `reply`.
    fn report(&self, watch: Watch, reply: &Message) {
        let took = watch.started.elapsed();
        if let Some(durations) = &self.durations {
            durations.record(outcome_of_status(reply.status()), took);
        }
        if let Some(observer) = &self.observer {
            observer.record(watch.trace, reply, took);
        }
    }
}

/// The broker-facing handler of one command on this instance.
pub(crate) fn command_handler(
    runtime: Arc<Runtime>,
    command: &'static CommandDescriptor,
    rules: InputRules,
) -> RequestHandler {
    let target = command.target(&runtime.subjects);
    let watchers = Watchers {
        observer: (runtime.dashboard.as_ref()).map(|d| d.observer(command, &target.subject)),
        durations: (runtime.metrics.as_ref()).map(|m| m.command_server(target.command_name())),
    };
    let served = Arc::new(Served {
        command,
        target,
        timed: runtime.broker.is_distributed(),
        watchers,
        rules: Arc::new(rules),
    });
    Arc::new(move |mut msg: Message| {
        let traced = command_trace(&runtime, command, &mut msg.meta);
        let watch = served.watchers.watch(&msg.meta);
        match &msg.meta.idempotency_key {
            None => watched(
                &served,
                watch,
                traced.run(execute(runtime.clone(), served.clone(), msg, None)),
            ),
            Some(_) => watched(
                &served,
                watch,
                traced.run(execute_once(runtime.clone(), served.clone(), msg)),
            ),
        }
    })
}

/// `reply`, boxed, and reported to the command's watchers when anything watches it.
fn watched(
    served: &Arc<Served>,
    watch: Option<Watch>,
    reply: impl Future<Output = Message> + Send + 'static,
) -> BoxFuture<'static, Message> {
    let Some(watch) = watch else {
        return reply.boxed();
    };
    let served = served.clone();
    async move {
        let reply = reply.await;
        served.watchers.report(watch, &reply);
        reply
    }
    .boxed()
}

/// The scope of one run of `command` here, a child of its caller's span: `meta` then carries the
/// run's own traceparent, which its context, calls and events continue.
fn command_trace(runtime: &Runtime, command: &CommandDescriptor, meta: &mut Metadata) -> Scope {
    spans::open(
        &mut meta.traceparent,
        |trace_id| {
            cohort_span!(
                parent: None,
                "command",
                trace_id,
                otel.name = Empty,
                otel.kind = "server",
                cohort.command = command.name,
                cohort.instance = runtime.instance_id.as_ref(),
                cohort.status = Empty,
            )
        },
        || format!("{}.{}", command.service, command.name),
    )
}

/// Runs a command that came with an idempotency key: at most once per key and input.
async fn execute_once(runtime: Arc<Runtime>, served: Arc<Served>, msg: Message) -> Message {
    let key = msg.meta.idempotency_key.clone().unwrap_or_default();
    let claim = match Claim::take(&runtime, served.command, &msg, &key).await {
        Ok(Claimed::Run(claim)) => claim,
        Ok(Claimed::Reply(reply)) => return *reply,
        Err(err) => return error_reply(&runtime, err, None),
    };
    let reply = execute(runtime.clone(), served, msg, Some(claim.scope())).await;
    claim.finish(&runtime, &reply).await;
    reply
}

/// Runs one command that arrived here. What needs no waiting happens before the returned future
/// starts, so that the future holds only what lives across a wait: it is moved and boxed on every
/// command, and the message and its metadata would triple its size.
fn execute(
    runtime: Arc<Runtime>,
    served: Arc<Served>,
    msg: Message,
    scope: Option<String>,
) -> impl Future<Output = Message> + Send + 'static {
    let started = start(runtime, &served, msg, scope);
    async move {
        let (ctx, run) = match started {
            Ok(started) => started,
            Err(reply) => return *reply,
        };
        let outcome = if served.timed {
            // Read when the command first waits: until then no timer can cut it off anyway.
            let time_left = || ctx.meta().time_left().unwrap_or_default();
            within(time_left, run).await.unwrap_or_else(|_| {
                Ok(Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "command `{}` did not finish before its deadline",
                        served.command.name
                    ),
                )))
            })
        } else {
            run.await
        };
        let outcome = outcome.unwrap_or_else(|panic| {
            let what = format!("command `{}`", served.command.name);
            Err(Error::panicked(&what, panic.as_ref()))
        });
        // Names and status only: bodies and sessions carry secrets and never reach the log.
        let status = outcome.as_ref().map_or_else(Error::status, |_| 200);
        spans::record("cohort.status", status);
        tracing::debug!(command = served.command.name, status, "command ran");
        match outcome {
            // A success goes without a status: absent means 200, one header less on the wire.
            Ok(body) => Message {
                meta: Box::new(reply_meta(&ctx)),
                payload: body,
            },
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
    served: &Served,
    msg: Message,
    scope: Option<String>,
) -> Result<(Ctx, Running), Box<Message>> {
    let now = message::unix_millis(SystemTime::now());
    let mut meta = msg.meta;
    // A caller leaves the deadline out when it is the command's own timeout from now (what the
    // caller allows it, give or take the trip over the broker).
    let deadline = *meta
        .deadline
        .get_or_insert_with(|| served.target.own_deadline(&runtime.config, now));
    if deadline <= now {
        let err = served.target.deadline_passed();
        return Err(Box::new(error_reply(&runtime, err, None)));
    }
    // A trace the caller did not send starts in the context, when something first needs it.
    let service = served.command.service;
    let ctx = match scope {
        None => Ctx::new(runtime, service, *meta),
        Some(scope) => Ctx::applying_once(runtime, service, scope, *meta),
    };
    let handler = served.command.handler;
    let run = match served.command.guard {
        None => match served.rules.check(&msg.payload) {
            Ok(()) => handler(ctx.clone(), msg.payload),
            Err(err) => Box::pin(async { Err(err) }),
        },
        Some(guard) => guarded(
            guard,
            served.rules.clone(),
            handler,
            ctx.clone(),
            msg.payload,
        ),
    };
    Ok((ctx, AssertUnwindSafe(run).catch_unwind()))
}

/// The handler behind its guard: a caller the guard refuses gets its error, and the input's checks
/// and the handler (input decoding included, so that nothing about the input leaks to it) never
/// run.
fn guarded(
    guard: GuardFn,
    rules: Arc<InputRules>,
    handler: CommandFn,
    ctx: Ctx,
    payload: Bytes,
) -> BoxFuture<'static, Result<Bytes, Error>> {
    Box::pin(async move {
        guard(&ctx).await?;
        rules.check(&payload)?;
        handler(ctx, payload).await
    })
}

/// A reply carrying `err` as a problem document. A 500 is logged here with its details, under a
/// trace id the client gets to quote: the command's, when it started (`ctx`).
fn error_reply(runtime: &Runtime, err: Error, ctx: Option<&Ctx>) -> Message {
    let err = err.logged(ctx.map(Ctx::trace_id), "command failed");
    let meta = match ctx {
        Some(ctx) => reply_meta(ctx),
        None => runtime.reply_meta(),
    };
    problem_reply(meta, &err)
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
    let processed = (runtime.metrics.as_ref()).map(|m| m.subscription(subscription.metrics_name()));
    Arc::new(move |mut msg: Message| {
        // An older emitter sent its caller's deadline, which binds none of the event's handlers.
        msg.meta.deadline = None;
        let traced = delivery_trace(&runtime, subscription, &mut msg.meta);
        let ctx = match msg.meta.message_id() {
            Some(id) => {
                let scope = delivery_scope(&runtime, subscription, id);
                Ctx::applying_once(runtime.clone(), subscription.service, scope, *msg.meta)
            }
            // An event published without an id by a client of its own: nothing to know it by.
            None => Ctx::new(runtime.clone(), subscription.service, *msg.meta),
        };
        let run = AssertUnwindSafe((subscription.handler)(ctx.clone(), msg.payload)).catch_unwind();
        let processed = processed.clone();
        let delivery = async move {
            let result = run.await.unwrap_or_else(|panic| {
                let what = format!("subscription `{}`", subscription.name);
                Err(Error::panicked(&what, panic.as_ref()))
            });
            if let Some(processed) = &processed {
                processed.processed(outcome_of(&result));
            }
            spans::record(
                "cohort.outcome",
                if result.is_ok() { "ok" } else { "failed" },
            );
            result.map_err(|err| err.logged(Some(ctx.trace_id()), "subscription failed"))
        };
        traced.run(delivery).boxed()
    })
}

/// The scope of one delivery of an event to `subscription` here, a child of the span that emitted
/// the event: `meta` then carries the delivery's own traceparent.
fn delivery_trace(
    runtime: &Runtime,
    subscription: &SubscriptionDescriptor,
    meta: &mut Metadata,
) -> Scope {
    spans::open(
        &mut meta.traceparent,
        |trace_id| {
            cohort_span!(
                parent: None,
                "event",
                trace_id,
                otel.name = Empty,
                otel.kind = "consumer",
                cohort.subscription = subscription.name,
                cohort.event = subscription.event,
                cohort.instance = runtime.instance_id.as_ref(),
                cohort.outcome = Empty,
            )
        },
        || format!("{}.{}", subscription.service, subscription.name),
    )
}

/// What a delivery's units of work are known by: the subscription and the event, and for an
/// every-instance subscription the instance too, since each instance applies each event.
fn delivery_scope(runtime: &Runtime, subscription: &SubscriptionDescriptor, id: &str) -> String {
    match subscription.every_instance {
        false => format!("applied:{}:{id}", subscription.name),
        true => format!("applied:{}:{}:{id}", subscription.name, runtime.instance_id),
    }
}
