//! The live dashboard at `/_cohort` (off by default: `COHORT_DASHBOARD=true` or
//! [`App::dashboard`](crate::App::dashboard)): the instances of the deployment, each command's
//! rate, errors and latency on each instance, the subscriptions' backlogs and dead letters, and
//! the last commands this instance ran.
//!
//! `/_cohort/data` gathers it as JSON on each call: over NATS, every instance answers `$SRV.STATS`
//! within [`data::GATHER_WINDOW`]; with the embedded broker, the runtime counts this instance's
//! commands itself. The page reads it every two seconds.

mod data;
mod page;
mod recent;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::BoxFuture;

use crate::broker::spi::{EndpointStats, SubscriptionSpec};
use crate::context::Ctx;
use crate::error::Error;
use crate::guard::Guard;
use crate::http::{problem, session_cookie};
use crate::message::{JSON, Message, Metadata};
use crate::registry::{CommandDescriptor, SubscriptionDescriptor};
use crate::runtime::Runtime;
use crate::spans::TraceId;
use recent::Recent;

/// Who may see the dashboard, checked on the instance that serves the page.
pub(crate) type DashboardGuard =
    Arc<dyn for<'a> Fn(&'a Ctx) -> BoxFuture<'a, Result<(), Error>> + Send + Sync>;

/// `guard` as the dashboard keeps it.
pub(crate) fn dashboard_guard<G>(guard: G) -> DashboardGuard
where
    G: for<'a> Guard<'a> + Copy + Send + Sync + 'static,
{
    Arc::new(as_guard(move |ctx| guard.check(ctx)))
}

/// Gives a closure the signature of a guard (rustc does not infer it on its own).
fn as_guard<F>(f: F) -> F
where
    F: for<'a> Fn(&'a Ctx) -> BoxFuture<'a, Result<(), Error>>,
{
    f
}

/// What the dashboard keeps on this instance while it is on.
pub(crate) struct Dashboard {
    guard: Option<DashboardGuard>,
    recent: Recent,
    /// The counts of each command served here, by subject, when the broker does not count them
    /// (the embedded one); `None` when it does.
    local: Option<Mutex<LocalCounts>>,
}

/// The counts of each command served here, by subject.
type LocalCounts = Vec<(String, Arc<EndpointStats>)>;

impl Dashboard {
    /// The dashboard of an instance whose broker counts its commands itself, or not.
    pub(crate) fn new(guard: Option<DashboardGuard>, broker_counts: bool) -> Dashboard {
        Dashboard {
            guard,
            recent: Recent::default(),
            local: (!broker_counts).then(Mutex::default),
        }
    }

    /// What runs each command of `command` here tells the dashboard.
    pub(crate) fn observer(
        self: &Arc<Self>,
        command: &'static CommandDescriptor,
        subject: &str,
    ) -> Observer {
        let stats = self.local.as_ref().map(|local| {
            let stats = Arc::new(EndpointStats::default());
            lock(local).push((subject.to_owned(), stats.clone()));
            stats
        });
        Observer {
            dashboard: self.clone(),
            command,
            stats,
        }
    }
}

/// Tells the dashboard about each command of one endpoint that this instance runs.
pub(crate) struct Observer {
    dashboard: Arc<Dashboard>,
    command: &'static CommandDescriptor,
    stats: Option<Arc<EndpointStats>>,
}

impl Observer {
    /// Records one command that ran in the trace `trace`, answered `reply` and took `took`.
    pub(crate) fn record(&self, trace: Option<TraceId>, reply: &Message, took: Duration) {
        if let Some(stats) = &self.stats {
            stats.record(reply, took);
        }
        let (command, status) = (self.command, reply.status());
        let recent = &self.dashboard.recent;
        recent.record(trace, command.service, command.name, status, took);
    }
}

/// `/_cohort` and `/_cohort/data`.
pub(crate) fn routes(
    runtime: Arc<Runtime>,
    dashboard: Arc<Dashboard>,
    commands: &[&'static CommandDescriptor],
    subscriptions: Vec<(&'static SubscriptionDescriptor, SubscriptionSpec)>,
) -> Router {
    // `http::router` refuses an instance id that is no header value before this runs.
    let instance =
        HeaderValue::from_str(&runtime.instance_id).unwrap_or(HeaderValue::from_static("?"));
    let source = Arc::new(Source {
        names: commands
            .iter()
            .map(|c| (c.target(&runtime.subjects).subject, *c))
            .collect(),
        subscriptions,
        runtime,
        dashboard,
        instance,
    });
    let page_source = source.clone();
    Router::new()
        .route(
            "/_cohort",
            get(move |headers: HeaderMap| serve_page(page_source.clone(), headers)),
        )
        .route(
            "/_cohort/data",
            get(move |headers: HeaderMap| serve_data(source.clone(), headers)),
        )
}

/// What the dashboard's routes read from.
struct Source {
    runtime: Arc<Runtime>,
    dashboard: Arc<Dashboard>,
    /// The commands this binary has, by subject.
    names: HashMap<String, &'static CommandDescriptor>,
    subscriptions: Vec<(&'static SubscriptionDescriptor, SubscriptionSpec)>,
    instance: HeaderValue,
}

impl Source {
    /// Whether the caller passes the dashboard's guard; its refusal when not.
    async fn admit(&self, headers: &HeaderMap) -> Result<(), Response> {
        let Some(guard) = &self.dashboard.guard else {
            return Ok(());
        };
        let meta = Metadata {
            session: session_cookie(headers),
            ..Metadata::default()
        };
        let ctx = Ctx::new(self.runtime.clone(), "cohort", meta);
        guard(&ctx)
            .await
            .map_err(|err| problem(&self.instance, &err))
    }

    fn broker_name(&self) -> &'static str {
        match self.runtime.broker.is_distributed() {
            true => "nats",
            false => "embedded",
        }
    }
}

async fn serve_page(source: Arc<Source>, headers: HeaderMap) -> Response {
    if let Err(refused) = source.admit(&headers).await {
        return refused;
    }
    let page = page::render(&source.runtime.instance_id, source.broker_name());
    no_store(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response())
}

async fn serve_data(source: Arc<Source>, headers: HeaderMap) -> Response {
    if let Err(refused) = source.admit(&headers).await {
        return refused;
    }
    let data = data::gather(&source).await;
    match serde_json::to_vec(&data) {
        Ok(json) => no_store(([(header::CONTENT_TYPE, JSON)], json).into_response()),
        Err(err) => {
            let err = Error::internal(format!("cannot encode the dashboard's data: {err}"));
            problem(&source.instance, &err)
        }
    }
}

/// Keeps browsers and proxies from showing an old sample.
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The lists here stay consistent whatever panics: each change is one push.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
