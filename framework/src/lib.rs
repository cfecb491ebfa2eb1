#![doc = include_str!("../../README.md")]
//!
//! # The guide
//!
//! The user guide lives in `guide/` (an mdBook); its chapters are compiled as doc tests of the
//! `guide` module, so every example in it builds.

#![warn(missing_docs, unreachable_pub)]

pub mod broker;
pub mod guard;
pub mod http;
pub mod settings;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;

mod app;
mod cluster_key;
mod config;
mod constraints;
mod context;
mod contract;
mod dashboard;
mod dispatch;
mod drift;
mod error;
mod idempotency;
mod input;
mod logging;
mod message;
mod metrics;
#[cfg(feature = "otel")]
mod otel;
#[cfg(any(feature = "nats", feature = "redis"))]
mod outage;
mod redact;
mod registry;
mod running;
mod runtime;
mod session;
mod setup;
mod spans;
mod sweeper;
mod task;
mod timer;
mod tls;
mod unit;

pub use app::App;
pub use cluster_key::{ClusterKey, MIN_CLUSTER_KEY_LEN};
pub use config::{Config, LogFormat, StreamStorage};
pub use context::Ctx;
pub use contract::{Command, Event};
pub use error::{Error, ErrorKind, Problem};
pub use http::ApiInfo;
pub use registry::TaskSchedule;
pub use running::Running;
pub use session::{Principal, Session};
pub use settings::Settings;
pub use state::{State, Versioned};
pub use task::{TaskOutcome, TaskStatus};
pub use tls::TlsFiles;
pub use unit::Tx;

/// `#[derive(Event)]`: makes a type an event, named by `#[event(name = "...")]` or its snake_case name.
pub use cohort_macros::Event;
/// `#[command(service = "...", version = N)]`: makes an async fn a command any instance can run.
pub use cohort_macros::command;
/// `#[http(METHOD, "/path/{param}")]`: binds a `#[command]` to an HTTP route.
pub use cohort_macros::http;
/// `#[subscription(service = "...")]`: runs an async fn for each event of its argument's type.
pub use cohort_macros::subscription;
/// `#[task(service = "...", every = "30s")]` (or `cron = "0 3 * * *"`, or `on_start`): runs an
/// async fn on a schedule on exactly one instance of the cluster.
pub use cohort_macros::task;

/// A `Result` whose error is [`cohort::Error`](Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What most handlers need: `use cohort::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Ctx, Error, ErrorKind, Event, Principal, Session, State, Tx, command, http, subscription,
        task,
    };
}

/// The guide's chapters, compiled as doc tests so that every code block in them builds.
#[cfg(doctest)]
pub mod guide {
    #[doc = include_str!("../../guide/src/getting-started.md")]
    pub struct GettingStarted;
    #[doc = include_str!("../../guide/src/commands-and-http.md")]
    pub struct CommandsAndHttp;
    #[doc = include_str!("../../guide/src/subscriptions-and-events.md")]
    pub struct SubscriptionsAndEvents;
    #[doc = include_str!("../../guide/src/state-and-sessions.md")]
    pub struct StateAndSessions;
    #[doc = include_str!("../../guide/src/errors.md")]
    pub struct Errors;
    #[doc = include_str!("../../guide/src/configuration.md")]
    pub struct Configuration;
    #[doc = include_str!("../../guide/src/testing.md")]
    pub struct Testing;
    #[doc = include_str!("../../guide/src/guarantees.md")]
    pub struct Guarantees;
    #[doc = include_str!("../../guide/src/many-instances.md")]
    pub struct ManyInstances;
    #[doc = include_str!("../../guide/src/observability.md")]
    pub struct Observability;
    #[doc = include_str!("../../guide/src/security.md")]
    pub struct Security;
    #[doc = include_str!("../../guide/src/signed-messages.md")]
    pub struct SignedMessages;
    #[doc = include_str!("../../guide/src/dashboard.md")]
    pub struct Dashboard;
    #[doc = include_str!("../../guide/src/performance.md")]
    pub struct Performance;
    #[doc = include_str!("../../guide/src/metrics.md")]
    pub struct Metrics;
    #[doc = include_str!("../../guide/src/operating.md")]
    pub struct Operating;
}

/// What the macros' generated code uses. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use bytes::Bytes;
    pub use futures_util::future::BoxFuture;
    pub use inventory;
    pub use schemars;
    pub use serde;

    pub use crate::broker::spi::StartPosition;
    pub use crate::contract::{SchemaProbe, WithSchema, WithoutSchema};
    pub use crate::input::{
        Decode, Describe, Encode, IntoError, decode_input, encode_output, into_event_result,
        no_input,
    };
    pub use crate::registry::{
        CommandDescriptor, EventDescriptor, GuardFn, HttpRoute, Location, Package,
        SubscriptionDescriptor, TaskDescriptor, TaskSchedule,
    };
    pub use crate::settings::Registration as SettingsRegistration;

    /// Runs `guard`; a function that is no guard is reported here, on the user's guard path.
    pub fn run_guard<'a, G: crate::guard::Guard<'a>>(
        guard: G,
        ctx: &'a crate::Ctx,
    ) -> BoxFuture<'a, Result<(), crate::Error>> {
        guard.check(ctx)
    }

    /// The JSON schema of `T`.
    pub fn schema_for<T: schemars::JsonSchema>() -> schemars::Schema {
        schemars::SchemaGenerator::default().into_root_schema_for::<T>()
    }

    /// Compile-time check, spanned on the user's input type.
    pub const fn assert_input<T: Decode + Describe + Send + 'static>() {}
    /// Compile-time check, spanned on the user's output type.
    pub const fn assert_output<T: Encode + Describe + Send + 'static>() {}
    /// Compile-time check, spanned on the user's error type.
    pub const fn assert_error<E: IntoError>() {}
    /// Compile-time check, spanned on a subscription's event type.
    pub const fn assert_event<T: crate::Event>() {}
}
