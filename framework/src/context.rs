//! `Ctx`: what every handler receives — shared state, events, calls to other commands, the
//! session, and who and what the work is for.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::contract::{Command, Event};
use crate::error::Error;
use crate::input::{Decode, Encode};
use crate::message::{self, Message, Metadata};
use crate::runtime::{Runtime, Target, joined, reply_result};
use crate::session::{SESSIONS, Session, SessionCell};
use crate::settings::Settings;
use crate::spans::{self, Scope, cohort_span};
use crate::state::State;

/// The context of one command or event delivery. Cheap to clone.
///
/// Everything a handler may keep beyond the call goes through it: [`Ctx::state`] for data,
/// [`Ctx::session`] for the caller's session. Both live in the shared store, so whichever instance
/// runs the next command sees them.
#[derive(Clone)]
pub struct Ctx {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<Runtime>,
    service: &'static str,
    meta: Metadata,
    /// The `traceparent` of this work: the one it arrived with, or one that starts a new trace
    /// here when something first asks for it. Most commands never do, and skip making one.
    trace: OnceLock<String>,
    session: Arc<SessionCell>,
    /// Only the units of an event delivery or of a command with an idempotency key apply once;
    /// other commands' have nothing to count.
    units: Option<Arc<Units>>,
}

/// What makes the units of some work apply once: the work they belong to, and how many it has
/// started (a unit is known by its place in the work).
struct Units {
    /// `applied:{subscription}:{event id}`, or the idempotency key's record.
    scope: String,
    started: AtomicU32,
}

impl Ctx {
    pub(crate) fn new(runtime: Arc<Runtime>, service: &'static str, meta: Metadata) -> Ctx {
        Ctx::with_units(runtime, service, meta, None)
    }

    /// The context of work whose units of work apply once however often the work runs: one
    /// event delivery (`scope` names the subscription and the event) or one idempotency key.
    pub(crate) fn applying_once(
        runtime: Arc<Runtime>,
        service: &'static str,
        scope: String,
        meta: Metadata,
    ) -> Ctx {
        let units = Arc::new(Units {
            scope,
            started: AtomicU32::new(0),
        });
        Ctx::with_units(runtime, service, meta, Some(units))
    }

    fn with_units(
        runtime: Arc<Runtime>,
        service: &'static str,
        mut meta: Metadata,
        units: Option<Arc<Units>>,
    ) -> Ctx {
        let session = Arc::new(SessionCell::new(meta.session.clone()));
        let trace = match meta.traceparent.take() {
            Some(parent) if message::trace_id_of(&parent).is_some() => OnceLock::from(parent),
            // None, or not one to continue: the trace starts here.
            _ => OnceLock::new(),
        };
        Ctx {
            inner: Arc::new(Inner {
                runtime,
                service,
                meta,
                trace,
                session,
                units,
            }),
        }
    }

    /// The shared state of this handler's service.
    pub fn state(&self) -> State {
        State::new(
            self.inner.runtime.store.clone(),
            self.inner.runtime.namespace(self.inner.service),
        )
    }

    /// The app's settings `T` (declared with [`settings!`](crate::settings!)), read once when
    /// the instance started.
    ///
    /// # Panics
    ///
    /// When `T` implements [`Settings`] by hand instead of through [`settings!`](crate::settings!),
    /// which registers it to be loaded: nothing loaded it.
    pub fn config<T: Settings>(&self) -> &T {
        self.inner.runtime.settings.get::<T>().unwrap_or_else(|| {
            panic!(
                "the settings `{}` were not loaded at start: declare them with \
                 `cohort::settings!({}, \"{}\")`",
                std::any::type_name::<T>(),
                std::any::type_name::<T>(),
                T::TABLE
            )
        })
    }

    /// The session of the caller (created on first write), stored in the shared store.
    pub fn session(&self) -> Session {
        Session::new(
            self.inner.runtime.store.clone(),
            self.inner.runtime.namespace(SESSIONS),
            self.inner.runtime.config.session_ttl,
            self.inner.session.clone(),
        )
    }

    /// Publishes an event as this handler's service, and returns once the broker has stored it.
    /// Inside a unit of work, emit with [`Tx::emit`](crate::Tx::emit) instead, so that the event goes out exactly
    /// when the unit commits.
    pub async fn emit<E: Event>(&self, event: &E) -> Result<(), Error> {
        let (subject, message, producer) = self.event_message(event)?;
        let publish = self.inner.runtime.broker.publish(&subject, message);
        match producer {
            Some(span) => publish.instrument(span).await,
            None => publish.await,
        }
    }

    /// The subject and message of `event`, emitted as this handler's service, and the event's
    /// producer span when spans are read in detail: its deliveries are that span's children.
    pub(crate) fn event_message<E: Event>(
        &self,
        event: &E,
    ) -> Result<(String, Message, Option<Span>), Error> {
        let payload = serde_json::to_vec(event)
            .map_err(|e| Error::internal(format!("cannot encode event `{}`: {e}", E::NAME)))?;
        let mut meta = self.outgoing_meta();
        // An event is kept in the stream for its whole retention, and its handlers act for no
        // caller's session: the session id, a bearer secret, stays out of it.
        meta.session = None;
        // Its handlers run whenever it is delivered, not within its emitter's caller's deadline.
        meta.deadline = None;
        // The subject names the emitting service; every header costs each delivery its parsing.
        meta.service = None;
        meta.message_id = Some(message::random_hex(12));
        meta.instance = Some(self.instance_id().to_owned());
        let subject = self
            .inner
            .runtime
            .subjects
            .event(self.inner.service, E::NAME);
        let producer =
            spans::detailed().then(|| self.producer_span(E::NAME, &mut meta.traceparent));
        let message = Message {
            meta: Box::new(meta),
            payload: Bytes::from(payload),
        };
        Ok((subject, message, producer))
    }

    /// The producer span of an event named `event` emitted under `traceparent`, which becomes
    /// the span's own.
    fn producer_span(&self, event: &'static str, traceparent: &mut Option<String>) -> Span {
        let scope = spans::open(
            traceparent,
            |trace_id| {
                cohort_span!(
                    "emit",
                    trace_id,
                    otel.name = Empty,
                    otel.kind = "producer",
                    cohort.event = event,
                    cohort.instance = self.instance_id(),
                )
            },
            || format!("emit {}.{event}", self.inner.service),
        );
        match scope {
            Scope::Span(span) => span,
            Scope::Trace(_) => Span::none(),
        }
    }

    /// The full key of the marker of the next unit of work this work starts, if its units apply
    /// once.
    pub(crate) fn next_unit_marker(&self) -> Option<String> {
        let units = self.inner.units.as_ref()?;
        let n = units.started.fetch_add(1, Ordering::Relaxed);
        let namespace = self.inner.runtime.namespace(self.inner.service);
        let mut digits = itoa::Buffer::new();
        Some(joined(&[
            &namespace,
            ":",
            &units.scope,
            ":",
            digits.format(n),
        ]))
    }

    /// Calls another command, on whichever instance serves it, with its input and output types
    /// checked at compile time: `ctx.call::<place_order>(input).await?`; a command without input
    /// takes `()`. The principal, tenant, trace, session and deadline travel along. The input must
    /// be `Serialize` and the output `Deserialize`: they cross the network as JSON.
    pub async fn call<C>(&self, input: C::Input) -> Result<C::Output, Error>
    where
        C: Command,
        C::Input: Encode,
        C::Output: Decode,
    {
        let payload = serde_json::to_vec(&input).map_err(|e| {
            Error::internal(format!("cannot encode the input of `{}`: {e}", C::NAME))
        })?;
        let runtime = &self.inner.runtime;
        let target = Target::of::<C>(&runtime.subjects);
        let timer = (runtime.metrics.as_ref()).map(|m| m.command_client(target.command_name()));
        let reply = runtime
            .invoke_timed(
                &target,
                timer.as_ref(),
                Bytes::from(payload),
                self.outgoing_meta(),
            )
            .await?;
        self.inner.session.absorb(&reply.meta);
        let body = reply_result(&reply)?;
        serde_json::from_slice(body).map_err(|e| {
            Error::internal(format!(
                "the reply of `{}` does not decode as its output type: {e}",
                C::NAME
            ))
        })
    }

    /// A context whose calls and events carry `principal`: call it once you have authenticated
    /// the caller, and every command it reaches sees who it is.
    pub fn with_principal(&self, principal: impl Into<String>) -> Ctx {
        self.with_meta(|meta| meta.principal = Some(principal.into()))
    }

    /// A context whose calls and events carry `tenant`.
    pub fn with_tenant(&self, tenant: impl Into<String>) -> Ctx {
        self.with_meta(|meta| meta.tenant = Some(tenant.into()))
    }

    fn with_meta(&self, change: impl FnOnce(&mut Metadata)) -> Ctx {
        let mut meta = self.inner.meta.clone();
        change(&mut meta);
        Ctx {
            inner: Arc::new(Inner {
                runtime: self.inner.runtime.clone(),
                service: self.inner.service,
                meta,
                // The same trace: started now if it was not yet, so that both contexts share it.
                trace: OnceLock::from(self.traceparent().to_owned()),
                session: self.inner.session.clone(),
                units: self.inner.units.clone(),
            }),
        }
    }

    /// Who the work is for, if the caller said so.
    pub fn principal(&self) -> Option<&str> {
        self.inner.meta.principal.as_deref()
    }

    /// The tenant the work belongs to, if the caller said so.
    pub fn tenant(&self) -> Option<&str> {
        self.inner.meta.tenant.as_deref()
    }

    /// The W3C trace id shared by everything this request caused.
    pub fn trace_id(&self) -> &str {
        message::trace_id_of(self.traceparent()).unwrap_or_default()
    }

    /// The W3C `traceparent` of this work: the one it arrived with, or, when its caller had no
    /// trace, one that starts the trace here (made when first asked for, then always the same).
    pub fn traceparent(&self) -> &str {
        self.inner.trace.get_or_init(message::new_traceparent)
    }

    /// The id of the event being handled (commands carry none: their traceparent names them).
    pub fn message_id(&self) -> Option<&str> {
        self.inner.meta.message_id.as_deref()
    }

    /// The instance that runs this handler.
    pub fn instance_id(&self) -> &str {
        &self.inner.runtime.instance_id
    }

    /// The instance that emitted the event being handled (commands do not name their sender).
    pub fn sender_instance(&self) -> Option<&str> {
        self.inner.meta.instance.as_deref()
    }

    /// The service this handler belongs to.
    pub fn service(&self) -> &str {
        self.inner.service
    }

    /// In a task's run, the fencing token of its lease: larger than that of every run before it,
    /// on any instance. Write it with what the run changes outside Cohort, and have that system
    /// refuse a smaller token than it has seen, so that a holder that stalled past its lease
    /// cannot overwrite its successor's work. `None` outside a task, and in tasks the run spawns.
    pub fn fencing_token(&self) -> Option<u64> {
        crate::task::fencing_token()
    }

    /// When the caller stops waiting, if it set a deadline; never in a subscription, whose event
    /// has no caller waiting.
    pub fn deadline(&self) -> Option<SystemTime> {
        self.inner
            .meta
            .deadline
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    pub(crate) fn meta(&self) -> &Metadata {
        &self.inner.meta
    }

    pub(crate) fn session_effects(&self) -> &SessionCell {
        &self.inner.session
    }

    /// The metadata a call or event made from here carries.
    fn outgoing_meta(&self) -> Metadata {
        let meta = &self.inner.meta;
        Metadata {
            // The span of this work: a call makes its own child of it, an event's delivery too.
            traceparent: Some(self.traceparent().to_owned()),
            principal: meta.principal.clone(),
            tenant: meta.tenant.clone(),
            session: self.inner.session.id(),
            deadline: meta.deadline,
            service: Some(self.inner.service.to_owned()),
            ..Metadata::default()
        }
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("service", &self.inner.service)
            .field("instance", &self.inner.runtime.instance_id)
            .field("meta", &self.inner.meta)
            .field("traceparent", &self.inner.trace.get())
            .finish()
    }
}
