//! One `#[http]` route: its request becomes the command's input, the command goes over the
//! broker, and its reply becomes the response.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::FutureExt;
use tracing::field::Empty;

use super::request::{Head, InputShape, build_input, read_body};
use super::response::{problem, respond};
use crate::error::{Error, ErrorKind};
use crate::message::{header as meta_header, trace_id_of};
use crate::metrics::{CommandTimer, RouteTimer};
use crate::registry::{CommandDescriptor, HttpRoute};
use crate::runtime::{Runtime, Target};
use crate::spans::{self, TraceId, cohort_span};

/// The W3C trace context of a request, which its span continues.
const TRACEPARENT: HeaderName = HeaderName::from_static(meta_header::TRACEPARENT);

/// One route and what it needs to turn its requests into commands.
pub(super) struct Route {
    runtime: Arc<Runtime>,
    http: HttpRoute,
    target: Target,
    status: StatusCode,
    instance: HeaderValue,
    shape: InputShape,
    timers: Option<Timers>,
}

/// What a route's requests are measured by: the request, and the command it sends.
struct Timers {
    request: RouteTimer,
    command: CommandTimer,
}

impl Route {
    pub(super) fn new(
        runtime: Arc<Runtime>,
        command: &'static CommandDescriptor,
        http: HttpRoute,
        instance: HeaderValue,
    ) -> Self {
        let target = command.target(&runtime.subjects);
        let timers = runtime.metrics.as_ref().map(|metrics| Timers {
            request: metrics.route(http.method, http.path, http.status),
            command: metrics.command_client(target.command_name()),
        });
        Route {
            http,
            target,
            timers,
            status: StatusCode::from_u16(http.status).unwrap_or(StatusCode::OK),
            shape: InputShape::of(command, http),
            runtime,
            instance,
        }
    }
}

/// Serves one request inside its span, which continues the caller's trace when the request has
/// a valid `traceparent`.
///
/// Not an `async fn`: the request is taken apart before anything waits, so that the future of a
/// request in flight holds only what its command needs.
pub(super) fn handle(route: Arc<Route>, request: Request) -> impl Future<Output = Response> {
    let mut traceparent = request
        .headers()
        .get(&TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .filter(|parent| trace_id_of(parent).is_some())
        .map(str::to_owned);
    let http = route.http;
    let traced = spans::open(
        &mut traceparent,
        |trace_id| {
            cohort_span!(
                "http",
                trace_id,
                otel.name = Empty,
                otel.kind = "server",
                http.request.method = http.method,
                http.route = http.path,
                cohort.instance = route.runtime.instance_id.as_ref(),
                http.response.status_code = Empty,
            )
        },
        || format!("{} {}", http.method, http.path),
    );
    let (parts, body) = request.into_parts();
    let head = Head::read(&route.shape, parts);
    let started = route.timers.as_ref().map(|_| Instant::now());
    let served = serve(Arc::clone(&route), head, body, traceparent).map(move |response| {
        let status = response.status().as_u16();
        spans::record("http.response.status_code", status);
        if let (Some(timers), Some(started)) = (&route.timers, started) {
            timers.request.observe(status, started);
        }
        response
    });
    traced.run(served)
}

/// The response to one request: its command's reply, or the problem that kept it from running.
///
/// An `async` block rather than an `async fn`, which would keep a second copy of what it takes
/// (rust-lang/rust#62958).
#[allow(clippy::manual_async_fn)]
fn serve(
    route: Arc<Route>,
    mut head: Result<Head, Error>,
    body: Body,
    traceparent: Option<String>,
) -> impl Future<Output = Response> {
    async move {
        let head = match &mut head {
            Ok(head) => head,
            Err(err) => return problem(&route.instance, err),
        };
        let config = &route.runtime.config;
        let body = match read_body(body, config.body_limit, config.http_body_timeout).await {
            Ok(body) => body,
            Err(err) if err.kind() == ErrorKind::RequestTimeout => {
                return closing(problem(&route.instance, &err));
            }
            Err(err) => return problem(&route.instance, &err),
        };
        let input = match build_input(&route.shape, &head.params(), head.query.as_deref(), body) {
            Ok(input) => input,
            Err(err) => return problem(&route.instance, &err),
        };
        let timer = route.timers.as_ref().map(|timers| &timers.command);
        // In a block of its own, so that the metadata is not kept beside the command that took it.
        let (trace_id, invoked) = {
            let mut meta = std::mem::take(&mut head.meta);
            meta.traceparent = traceparent;
            // Kept for the log line of a 500: the metadata itself goes with the command.
            let trace_id = meta.trace_id().map(TraceId::of);
            let invoked = route
                .runtime
                .invoke_timed(&route.target, timer, input, meta);
            (trace_id, invoked)
        };
        match invoked.await {
            Ok(reply) => respond(config, route.status, &route.instance, reply),
            Err(err) => {
                let err = err.logged(
                    trace_id.as_ref().map(TraceId::as_str),
                    "HTTP request failed",
                );
                problem(&route.instance, &err)
            }
        }
    }
}

/// Asks hyper to close the connection after this response: the rest of a stalled body may still
/// come, and would be read as the next request.
fn closing(mut response: Response) -> Response {
    let close = HeaderValue::from_static("close");
    response.headers_mut().insert(header::CONNECTION, close);
    response
}
