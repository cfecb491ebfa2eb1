//! One `#[http]` route: its request becomes the command's input, the command goes over the
//! broker, and its reply becomes the response.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::request::{Head, InputShape, build_input, read_body};
use super::response::{problem, respond};
use crate::error::ErrorKind;
use crate::metrics::{CommandTimer, RouteTimer};
use crate::registry::{CommandDescriptor, HttpRoute};
use crate::runtime::{Runtime, Target};

/// One route and what it needs to turn its requests into commands.
pub(super) struct Route {
    runtime: Arc<Runtime>,
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
            target,
            timers,
            status: StatusCode::from_u16(http.status).unwrap_or(StatusCode::OK),
            shape: InputShape::of(command, http),
            runtime,
            instance,
        }
    }
}

pub(super) async fn handle(route: Arc<Route>, request: Request) -> Response {
    // One await of `answer`, not one a branch: each would take its room in this future.
    let started = route.timers.as_ref().map(|_| Instant::now());
    let response = answer(&route, request).await;
    if let (Some(timers), Some(started)) = (&route.timers, started) {
        timers.request.observe(response.status().as_u16(), started);
    }
    response
}

async fn answer(route: &Route, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let head = match Head::read(&route.shape, parts).await {
        Ok(head) => head,
        Err(err) => return problem(&route.instance, &err),
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
    // Kept for the log line of a 500: the metadata itself goes with the command.
    let trace_id = head.meta.trace_id().map(str::to_owned);
    let timer = route.timers.as_ref().map(|timers| &timers.command);
    let runtime = &route.runtime;
    match runtime
        .invoke_timed(&route.target, timer, input, head.meta)
        .await
    {
        Ok(reply) => respond(config, route.status, &route.instance, reply),
        Err(err) => {
            let err = err.logged(trace_id.as_deref(), "HTTP request failed");
            problem(&route.instance, &err)
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
