//! `App`: build an instance from the registered functions and the configuration, run it, and shut
//! it down without losing work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::MemoryBroker;
use crate::broker::spi::{Broker, Endpoint, SubscriptionSpec, Work};
use crate::config::Config;
use crate::context::Ctx;
use crate::contract::Command;
use crate::dispatch::{command_handler, event_handler};
use crate::error::Error;
use crate::input::{Decode, Encode};
use crate::message::{Metadata, Subjects};
use crate::registry::{CommandDescriptor, Registry, SubscriptionDescriptor};
use crate::runtime::Runtime;
use crate::state::MemoryStore;
use crate::state::spi::StateStore;

/// An instance of the application: every `#[command]`, `#[http]` and `#[subscription]` in the
/// binary, wired to a broker and a state store.
///
/// ```no_run
/// #[tokio::main]
/// async fn main() -> Result<(), cohort::Error> {
///     cohort::App::from_env()?.run().await
/// }
/// ```
pub struct App {
    config: Config,
    broker: Option<Arc<dyn Broker>>,
    store: Option<Arc<dyn StateStore>>,
}

impl Default for App {
    fn default() -> Self {
        App::with_config(Config::default())
    }
}

impl App {
    /// An app configured from the `COHORT_*` environment variables (see [`Config`]).
    pub fn from_env() -> Result<App, Error> {
        Ok(App::with_config(Config::from_env()?))
    }

    /// An app with this configuration.
    pub fn with_config(config: Config) -> App {
        App {
            config,
            broker: None,
            store: None,
        }
    }

    /// Changes the configuration in code, after the environment was read.
    pub fn configure(mut self, change: impl FnOnce(&mut Config)) -> App {
        change(&mut self.config);
        self
    }

    /// Serves HTTP on `addr` (`None`: no HTTP, a worker only). Port 0 picks a free port.
    pub fn http_addr(self, addr: Option<SocketAddr>) -> App {
        self.configure(|c| c.http_addr = addr)
    }

    /// Starts a distributed broker with the embedded store anyway (see
    /// [`Config::allow_local_state`]).
    pub fn allow_local_state(self) -> App {
        self.configure(|c| c.allow_local_state = true)
    }

    /// Starts even though the binary registers no command and no subscription (see
    /// [`Config::allow_empty`]).
    pub fn allow_empty(self) -> App {
        self.configure(|c| c.allow_empty = true)
    }

    /// Names this instance (default: generated).
    pub fn instance_id(self, id: impl Into<String>) -> App {
        let id = id.into();
        self.configure(|c| c.instance_id = id)
    }

    /// Uses this broker instead of the one the configuration selects (several in-process
    /// instances can share one [`MemoryBroker`]).
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> App {
        self.broker = Some(broker);
        self
    }

    /// Uses this state store instead of the one the configuration selects.
    pub fn store(mut self, store: Arc<dyn StateStore>) -> App {
        self.store = Some(store);
        self
    }

    /// The configuration as it stands.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts the instance and serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run(self) -> Result<(), Error> {
        crate::logging::init();
        let running = self.start().await?;
        shutdown_signal().await;
        tracing::info!(instance = %running.instance_id(), "shutdown requested; finishing work in flight");
        running.shutdown().await
    }

    /// Starts the instance and returns at once, serving in the background. For tests and for
    /// applications that manage their own lifecycle.
    pub async fn start(self) -> Result<Running, Error> {
        let started = Instant::now();
        let registry = Registry::collect()?;
        let config = self.config;
        check_not_empty(&config, &registry)?;
        validate_instance_id(&config.instance_id)?;
        validate_services(&config, &registry)?;
        let subjects = Subjects::new(config.subject_prefix.clone());
        let broker = match self.broker {
            Some(broker) => broker,
            None => connect_broker(&config, &subjects).await?,
        };
        let store = match self.store {
            Some(store) => store,
            None => connect_store(&config).await?,
        };
        check_state_is_shared(&config, broker.as_ref(), store.as_ref())?;
        let runtime = Arc::new(Runtime {
            broker,
            store,
            subjects,
            instance_id: config.instance_id.clone().into(),
            config,
            accepting: AtomicBool::new(true),
        });
        let work = Work::default();
        // Consumers first: a command served a moment later may already emit events for them.
        subscribe(&runtime, &registry, &work).await?;
        serve_commands(&runtime, &registry, &work).await?;
        work.tasks.spawn(crate::unit::relay_orphans(
            runtime.clone(),
            work.stop.clone(),
        ));
        let router = crate::http::router(runtime.clone(), &registry.commands)?;
        let http_stop = CancellationToken::new();
        let (http_addr, http_task) = match runtime.config.http_addr {
            Some(addr) => {
                let (addr, task) = serve_http(addr, router.clone(), http_stop.clone()).await?;
                (Some(addr), Some(task))
            }
            None => (None, None),
        };
        log_start(&runtime, &registry, http_addr, started.elapsed());
        Ok(Running {
            runtime,
            http_addr,
            http_task,
            http_stop,
            work,
            router,
        })
    }
}

/// A binary without handlers is almost always one whose handlers the linker dropped: they live in a
/// library crate that `main` never references, so their registrations never reach the binary.
fn check_not_empty(config: &Config, registry: &Registry) -> Result<(), Error> {
    if config.allow_empty || !registry.is_empty() {
        return Ok(());
    }
    Err(Error::bad_request(
        "this binary registers no #[command] and no #[subscription], so it would serve nothing.\n\
         If your handlers live in a library crate, `main` must use something from it, or the \
         linker drops their registrations: have the library export a `pub fn app()` that \
         returns the `cohort::App`, and run it from `main`: `my_lib::app()?.run().await`.\n\
         If this instance really only calls commands, opt in with `App::allow_empty()` or \
         COHORT_ALLOW_EMPTY=true.",
    )
    .with_code("no_handlers"))
}

fn validate_instance_id(id: &str) -> Result<(), Error> {
    let valid = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "COHORT_INSTANCE_ID={id:?} is not valid: use letters, digits, `-` and `_`"
        ))
        .with_code("invalid_config"))
    }
}

/// A name in `COHORT_SERVICES` that no command or subscription has is a typo that would
/// silently serve nothing.
fn validate_services(config: &Config, registry: &Registry) -> Result<(), Error> {
    let known = registry.services();
    let unknown: Vec<&String> = config
        .services
        .iter()
        .flatten()
        .filter(|s| !known.contains(&s.as_str()))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::bad_request(format!(
        "COHORT_SERVICES names {unknown:?}, which this binary does not have; its services are {known:?}"
    ))
    .with_code("invalid_config"))
}

async fn connect_broker(config: &Config, subjects: &Subjects) -> Result<Arc<dyn Broker>, Error> {
    let Some(url) = &config.nats_url else {
        return Ok(Arc::new(MemoryBroker::new()));
    };
    #[cfg(feature = "nats")]
    {
        let streams = crate::broker::StreamSettings {
            max_age: config.event_retention,
            replicas: config.stream_replicas,
            storage: config.stream_storage,
            duplicate_window: config.duplicate_window,
        };
        let broker = crate::broker::NatsBroker::connect_with(
            url,
            subjects.clone(),
            &config.instance_id,
            streams,
        )
        .await?;
        Ok(Arc::new(broker))
    }
    #[cfg(not(feature = "nats"))]
    {
        let _ = (url, subjects);
        Err(missing_feature("COHORT_NATS_URL", "nats"))
    }
}

async fn connect_store(config: &Config) -> Result<Arc<dyn StateStore>, Error> {
    let Some(url) = &config.redis_url else {
        return Ok(Arc::new(MemoryStore::new()));
    };
    #[cfg(feature = "redis")]
    {
        Ok(Arc::new(crate::state::RedisStore::connect(url).await?))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url;
        Err(missing_feature("COHORT_REDIS_URL", "redis"))
    }
}

#[cfg(any(not(feature = "nats"), not(feature = "redis")))]
fn missing_feature(setting: &str, feature: &str) -> Error {
    Error::bad_request(format!(
        "{setting} is set, but this binary was built without Cohort's `{feature}` feature; \
         enable it in Cargo.toml (`cohort = {{ version = \"...\", features = [\"{feature}\"] }}`) \
         or unset {setting}"
    ))
    .with_code("invalid_config")
}

/// Many instances with state in each one's memory would each see different data: refuse, unless
/// the user says this is really what they want.
fn check_state_is_shared(
    config: &Config,
    broker: &dyn Broker,
    store: &dyn StateStore,
) -> Result<(), Error> {
    if !broker.is_distributed() || store.is_shared() {
        return Ok(());
    }
    if config.allow_local_state {
        tracing::warn!(
            "COHORT_ALLOW_LOCAL_STATE=true: commands run on any instance but state stays in this \
             process; every instance will see different data and sessions will not follow users"
        );
        return Ok(());
    }
    Err(Error::bad_request(
        "the broker is shared by many instances (COHORT_NATS_URL is set) but the state store is this \
         process's memory (COHORT_REDIS_URL is not set). A command may run on any instance, so state \
         and sessions kept in one instance's memory would be missing on the others. Set \
         COHORT_REDIS_URL=redis://host:6379 so all instances share state, or set \
         COHORT_ALLOW_LOCAL_STATE=true if you really run a single instance.",
    )
    .with_code("local_state_with_distributed_broker"))
}

async fn serve_commands(
    runtime: &Arc<Runtime>,
    registry: &Registry,
    work: &Work,
) -> Result<(), Error> {
    let endpoints = registry
        .commands
        .iter()
        .filter(|c| runtime.config.runs_service(c.service))
        .map(|&command| {
            (
                endpoint(runtime, command),
                command_handler(runtime.clone(), command),
            )
        })
        .collect::<Vec<_>>();
    if endpoints.is_empty() {
        return Ok(());
    }
    runtime.broker.serve(endpoints, work).await
}

fn endpoint(runtime: &Runtime, command: &CommandDescriptor) -> Endpoint {
    let schema = |f: fn() -> schemars::Schema| serde_json::to_string(&f()).unwrap_or_default();
    let mut endpoint = Endpoint::new(
        &runtime.subjects,
        command.service,
        command.version,
        command.name,
    );
    command.description.clone_into(&mut endpoint.description);
    endpoint.metadata = [
        ("input_schema".to_owned(), schema(command.input_schema)),
        ("output_schema".to_owned(), schema(command.output_schema)),
    ]
    .into();
    endpoint
}

async fn subscribe(runtime: &Arc<Runtime>, registry: &Registry, work: &Work) -> Result<(), Error> {
    for &subscription in registry
        .subscriptions
        .iter()
        .filter(|s| runtime.config.runs_service(s.service))
    {
        let spec = subscription_spec(runtime, subscription);
        runtime
            .broker
            .subscribe(spec, event_handler(runtime.clone(), subscription), work)
            .await?;
    }
    Ok(())
}

fn subscription_spec(runtime: &Runtime, subscription: &SubscriptionDescriptor) -> SubscriptionSpec {
    let config = &runtime.config;
    let mut spec = SubscriptionSpec::new(
        &runtime.subjects,
        subscription.service,
        subscription.name,
        subscription.event,
    );
    spec.every_instance = subscription.every_instance;
    spec.max_attempts = config.event_max_attempts;
    spec.backoff = config.event_backoff.clone();
    spec.ack_wait = config.event_ack_wait;
    spec
}

async fn serve_http(
    addr: SocketAddr,
    router: axum::Router,
    stop: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<std::io::Result<()>>), Error> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Error::unavailable(format!("cannot listen on {addr} (COHORT_HTTP_ADDR): {e}"))
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::unavailable(format!("cannot read the HTTP address: {e}")))?;
    let server = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
    Ok((local, tokio::spawn(server.into_future())))
}

fn log_start(
    runtime: &Runtime,
    registry: &Registry,
    http_addr: Option<SocketAddr>,
    took: Duration,
) {
    let config = &runtime.config;
    let commands: Vec<String> = registry
        .commands
        .iter()
        .filter(|c| config.runs_service(c.service))
        .map(|c| format!("{}.v{}.{}", c.service, c.version, c.name))
        .collect();
    let routes: Vec<String> = registry
        .commands
        .iter()
        .filter_map(|c| c.http.map(|h| format!("{} {}", h.method, h.path)))
        .collect();
    let subscriptions: Vec<String> = registry
        .subscriptions
        .iter()
        .filter(|s| config.runs_service(s.service))
        .map(|s| format!("{}.{} <- {}", s.service, s.name, s.event))
        .collect();
    tracing::info!(
        instance = %runtime.instance_id,
        http = %http_addr.map_or("off".to_owned(), |a| format!("http://{a}")),
        broker = if runtime.broker.is_distributed() { "nats" } else { "embedded" },
        store = if runtime.store.is_shared() { "redis" } else { "embedded" },
        started_in_ms = took.as_millis() as u64,
        "cohort instance ready"
    );
    tracing::info!(commands = ?commands, "serving commands");
    tracing::info!(routes = ?routes, "routing HTTP");
    tracing::info!(subscriptions = ?subscriptions, "consuming events");
}

/// A started instance. Drop it to abandon it; call [`Running::shutdown`] to stop it gracefully.
pub struct Running {
    runtime: Arc<Runtime>,
    http_addr: Option<SocketAddr>,
    http_task: Option<JoinHandle<std::io::Result<()>>>,
    http_stop: CancellationToken,
    work: Work,
    router: axum::Router,
}

impl Running {
    /// The bound HTTP address (with the real port when port 0 was asked for).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.runtime.instance_id
    }

    /// Calls a command from outside any handler (a test, a CLI, a scheduled job), with its types
    /// checked at compile time, on whichever instance serves it:
    /// `running.call::<place_order>(input).await?`.
    pub async fn call<C>(&self, input: C::Input) -> Result<C::Output, Error>
    where
        C: Command,
        C::Input: Encode,
        C::Output: Decode,
    {
        let caller = Metadata {
            traceparent: Some(crate::message::new_traceparent()),
            ..Metadata::default()
        };
        Ctx::new(self.runtime.clone(), C::SERVICE, caller)
            .call::<C>(input)
            .await
    }

    /// The HTTP router, for driving the app in-process (`tower::ServiceExt::oneshot`).
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Stops taking new work and finishes what is in flight, within the grace period:
    /// first `/readyz` turns 503 and HTTP stops accepting while its requests complete (their
    /// commands still run here); then the broker stops handing this instance commands and events,
    /// and the handlers already running finish and acknowledge.
    pub async fn shutdown(self) -> Result<(), Error> {
        let deadline = Instant::now() + self.runtime.config.shutdown_grace;
        self.runtime.accepting.store(false, Ordering::Relaxed);
        if self.http_task.is_some() {
            tokio::time::sleep(self.runtime.config.shutdown_delay).await;
        }
        self.http_stop.cancel();
        if let Some(task) = self.http_task {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::error!(error = %e, "HTTP server failed"),
                Ok(Err(e)) => tracing::error!(error = %e, "HTTP server task failed"),
                Err(_) => tracing::warn!("HTTP requests still running after the grace period"),
            }
        }
        self.work.stop.cancel();
        self.work.tasks.close();
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, self.work.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "commands or events still running after the grace period; abandoning them"
            );
        }
        self.runtime.broker.close().await?;
        tracing::info!(instance = %self.runtime.instance_id, "shut down");
        Ok(())
    }
}

/// Resolves on SIGTERM (what orchestrators send) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
