//! `App`: build an instance from the registered functions and the configuration, run it, and shut
//! it down without losing work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::spi::{Broker, DeliveryReport, Endpoint, SubscriptionSpec, Work};
use crate::config::Config;
use crate::constraints::InputRules;
use crate::dashboard::{Dashboard, DashboardGuard, dashboard_guard};
use crate::dispatch::{command_handler, event_handler};
use crate::drift::{SCHEMA_KEY, schema_hash};
use crate::error::Error;
use crate::guard::Guard;
use crate::http::{ApiInfo, HttpServer};
use crate::message::Subjects;
use crate::metrics::{MeteredStore, Metrics, QualifiedName, Scraper, metrics_router};
use crate::registry::{CommandDescriptor, Registry, SubscriptionDescriptor};
use crate::running::{Running, shutdown_signal};
use crate::runtime::{Namespaces, Runtime};
use crate::session::SESSIONS;
use crate::settings::{AppSettings, Settings, SharedVars};
use crate::setup::{
    check_not_empty, check_state_is_shared, connect_broker, connect_store, validate_instance_id,
    validate_services, validate_subject_prefix,
};
use crate::state::spi::StateStore;
use crate::sweeper::Sweeper;

/// An instance of the application: every `#[command]`, `#[http]`, `#[subscription]` and `#[task]`
/// in the binary, wired to a broker and a state store.
///
/// ```no_run
/// #[tokio::main]
/// async fn main() -> Result<(), cohort::Error> {
///     cohort::App::from_env()?.run().await
/// }
/// ```
pub struct App {
    config: Config,
    /// Where the app's settings are read from at start.
    vars: SharedVars,
    settings: AppSettings,
    broker: Option<Arc<dyn Broker>>,
    store: Option<Arc<dyn StateStore>>,
    dashboard_guard: Option<DashboardGuard>,
    api_info: Option<ApiInfo>,
}

impl Default for App {
    fn default() -> Self {
        App::with_config(Config::default())
    }
}

impl App {
    /// An app configured from the settings file and the `COHORT_*` environment variables (see
    /// [`Config::from_env`]); its own [`Settings`] are read from the same at start.
    pub fn from_env() -> Result<App, Error> {
        Ok(App::with_config(Config::from_env()?))
    }

    /// Like [`App::from_env`], from any source of variables (tests use a map): Cohort's
    /// configuration and the app's [`Settings`] alike.
    pub fn from_vars(
        vars: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Result<App, Error> {
        let config = Config::from_vars(&vars)?;
        Ok(App {
            vars: Arc::new(vars),
            ..App::with_config(config)
        })
    }

    /// An app with this configuration; its own [`Settings`] are still read from the settings
    /// file and the environment at start, unless given with [`App::settings`].
    pub fn with_config(config: Config) -> App {
        App {
            config,
            vars: Arc::new(|name| std::env::var(name).ok()),
            settings: AppSettings::default(),
            broker: None,
            store: None,
            dashboard_guard: None,
            api_info: None,
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

    /// Starts with NATS but without a cluster key (see [`Config::allow_unsigned`]).
    pub fn allow_unsigned(self) -> App {
        self.configure(|c| c.allow_unsigned = true)
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
    /// instances can share one [`MemoryBroker`](crate::broker::MemoryBroker)).
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> App {
        self.broker = Some(broker);
        self
    }

    /// Uses this state store instead of the one the configuration selects.
    pub fn store(mut self, store: Arc<dyn StateStore>) -> App {
        self.store = Some(store);
        self
    }

    /// Serves the live dashboard at `/_cohort` (see [`Config::dashboard`]) to the callers that
    /// `guard` passes, checked with their session like a command's guard:
    /// `.dashboard(admin)` for an `async fn admin(ctx: &Ctx) -> Result<(), Error>`.
    pub fn dashboard<G>(mut self, guard: G) -> App
    where
        G: for<'a> Guard<'a> + Copy + Send + Sync + 'static,
    {
        self.dashboard_guard = Some(dashboard_guard(guard));
        self.configure(|c| c.dashboard = true)
    }

    /// The title, version and description of `/openapi.json` (default: the name and version of
    /// the package that declares the HTTP routes). `cohort::api_info!()` reads them from the
    /// calling package's `Cargo.toml`.
    pub fn api_info(mut self, info: ApiInfo) -> App {
        self.api_info = Some(info);
        self
    }

    /// Uses these settings instead of reading them at start (for tests, say). Every instance of
    /// a deployment must have the same: a command runs on any of them.
    pub fn settings<T: Settings>(mut self, settings: T) -> App {
        self.settings.insert(settings);
        self
    }

    /// The configuration as it stands.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Starts the instance and serves until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run(self) -> Result<(), Error> {
        crate::logging::init(&self.config);
        let running = self.start().await?;
        shutdown_signal().await;
        tracing::info!(instance = %running.instance_id(), "shutdown requested; finishing work in flight");
        let stopped = running.shutdown().await;
        #[cfg(feature = "otel")]
        let _ = tokio::task::spawn_blocking(crate::otel::shutdown).await;
        stopped
    }

    /// Starts the instance and returns at once, serving in the background. For tests and for
    /// applications that manage their own lifecycle.
    pub async fn start(self) -> Result<Running, Error> {
        let started = Instant::now();
        let registry = Registry::collect()?;
        let settings = AppSettings::load(&*self.vars, self.settings)?;
        let config = self.config;
        check_not_empty(&config, &registry)?;
        validate_instance_id(&config.instance_id)?;
        validate_subject_prefix(&config.subject_prefix)?;
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
        let dashboard = config.dashboard.then(|| {
            let broker_counts = broker.is_distributed();
            Arc::new(Dashboard::new(self.dashboard_guard, broker_counts))
        });
        check_metrics_path_is_free(&config, &registry)?;
        let metrics = config.metrics.then(|| Metrics::new(&config.instance_id));
        let store: Arc<dyn StateStore> = match &metrics {
            Some(metrics) => Arc::new(MeteredStore::new(store, metrics)),
            None => store,
        };
        let areas = registry.services().into_iter().chain([SESSIONS]);
        let runtime = Arc::new(Runtime {
            broker,
            sweeper: Sweeper::start(store.clone()),
            store,
            namespaces: Namespaces::new(subjects.prefix(), areas),
            subjects,
            instance_id: config.instance_id.clone().into(),
            config,
            settings,
            accepting: AtomicBool::new(true),
            dashboard,
            metrics,
            tasks: crate::task::TaskBoard::new(&registry.tasks),
            drift: crate::drift::DriftBoard::default(),
        });
        // Before anything is served: the instance is not ready until its start-up tasks ran here
        // or on another instance.
        crate::task::run_on_start(&runtime, &registry.tasks).await?;
        let work = Work::default();
        // Consumers first: a command served a moment later may already emit events for them.
        let subscriptions = subscribe(&runtime, &registry, &work).await?;
        serve_commands(&runtime, &registry, &work).await?;
        let own_services = (registry.services().into_iter())
            .filter(|s| runtime.config.runs_service(s))
            .collect();
        work.tasks.spawn(crate::unit::relay_orphans(
            runtime.clone(),
            own_services,
            work.stop.clone(),
        ));
        crate::task::spawn_periodic(&runtime, &registry.tasks, &work.tasks, &work.stop);
        let events = crate::drift::event_table(&runtime, &registry);
        runtime
            .broker
            .announce_events(events.clone(), &work)
            .await?;
        work.tasks.spawn(crate::drift::watch(
            runtime.clone(),
            registry.commands.clone(),
            events,
            work.stop.clone(),
        ));
        let mut router =
            crate::http::router(runtime.clone(), &registry.commands, self.api_info.as_ref())?;
        if let Some(dashboard) = &runtime.dashboard {
            router = router.merge(dashboard_routes(&runtime, dashboard, &registry));
        }
        let metrics = runtime
            .metrics
            .as_ref()
            .map(|_| metrics_router(Arc::new(Scraper::new(runtime.clone(), subscriptions))));
        let http_stop = CancellationToken::new();
        let (metrics_addr, metrics_task) = match (metrics, runtime.config.metrics_addr) {
            (Some(metrics), Some(addr)) => {
                let (addr, task) = listen(&runtime, addr, metrics, &http_stop).await?;
                (Some(addr), Some(task))
            }
            (Some(metrics), None) => {
                router = router.merge(metrics);
                (None, None)
            }
            (None, _) => (None, None),
        };
        let (http_addr, http_task) = match runtime.config.http_addr {
            Some(addr) => {
                let (addr, task) = listen(&runtime, addr, router.clone(), &http_stop).await?;
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
            metrics_addr,
            metrics_task,
            work,
            router,
        })
    }
}

fn dashboard_routes(
    runtime: &Arc<Runtime>,
    dashboard: &Arc<Dashboard>,
    registry: &Registry,
) -> axum::Router {
    let subscriptions = registry
        .subscriptions
        .iter()
        .filter(|s| runtime.config.runs_service(s.service))
        .map(|&s| (s, subscription_spec(runtime, s)))
        .collect();
    crate::dashboard::routes(
        runtime.clone(),
        dashboard.clone(),
        &registry.commands,
        subscriptions,
    )
}

/// Binds `addr` and serves `router` there until `stop`; returns the bound address.
async fn listen(
    runtime: &Runtime,
    addr: SocketAddr,
    router: axum::Router,
    stop: &CancellationToken,
) -> Result<(SocketAddr, JoinHandle<std::io::Result<()>>), Error> {
    let server = HttpServer::bind(addr, &runtime.config, &runtime.instance_id).await?;
    let addr = server.local_addr()?;
    Ok((addr, server.spawn(router, stop.clone())))
}

/// `/metrics` on the HTTP listener is the metrics' own: a route of the app there would clash.
fn check_metrics_path_is_free(config: &Config, registry: &Registry) -> Result<(), Error> {
    let serves_metrics = config.metrics && config.metrics_addr.is_none();
    let clash = registry
        .commands
        .iter()
        .find(|c| c.http.is_some_and(|http| http.path == "/metrics"));
    match (serves_metrics, clash) {
        (true, Some(command)) => Err(Error::bad_request(format!(
            "the command `{}` ({}) takes the route /metrics, where the metrics are served; move \
             the metrics with COHORT_METRICS_ADDR, turn them off with COHORT_METRICS=off, or \
             choose another path",
            command.name, command.location
        ))
        .with_code("invalid_config")),
        _ => Ok(()),
    }
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
            let rules = InputRules::of(command)?;
            Ok((
                endpoint(runtime, command),
                command_handler(runtime.clone(), command, rules),
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
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
        (SCHEMA_KEY.to_owned(), schema_hash(command)),
    ]
    .into();
    endpoint
}

/// Subscribes to every subscription this instance runs; returns them, for the metrics.
async fn subscribe(
    runtime: &Arc<Runtime>,
    registry: &Registry,
    work: &Work,
) -> Result<Vec<(QualifiedName, SubscriptionSpec)>, Error> {
    let mut subscribed = Vec::new();
    for &subscription in registry
        .subscriptions
        .iter()
        .filter(|s| runtime.config.runs_service(s.service))
    {
        let spec = subscription_spec(runtime, subscription);
        runtime
            .broker
            .subscribe(
                spec.clone(),
                event_handler(runtime.clone(), subscription),
                work,
            )
            .await?;
        subscribed.push((subscription.metrics_name(), spec));
    }
    Ok(subscribed)
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
    spec.start = subscription.start;
    spec.max_attempts = config.event_max_attempts;
    spec.backoff = config.event_backoff.clone();
    spec.ack_wait = config.event_ack_wait;
    if let Some(metrics) = &runtime.metrics {
        spec.report = DeliveryReport::to(metrics.subscription(subscription.metrics_name()));
    }
    spec
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
    let tasks: Vec<String> = registry
        .tasks
        .iter()
        .filter(|t| config.runs_service(t.service))
        .map(|t| format!("{}.{} ({})", t.service, t.name, t.schedule))
        .collect();
    tracing::info!(tasks = ?tasks, "running tasks");
}
