//! The HTTP layer: routes from `#[http]`, each turned into a command sent over the broker.
//!
//! It never runs a handler itself. It assembles the input (path parameters, then query
//! parameters, then the JSON body), sends the command, and turns the reply into a response:
//! the body with the route's status, or an RFC 9457 problem. Every response says which instance
//! answered ([`INSTANCE_HEADER`]) and, when a command ran, which instance ran it
//! ([`EXECUTED_BY_HEADER`]).

mod cookie;
mod deadlines;
mod openapi;
mod request;
mod response;
mod route;
mod server;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on_service};
use bytes::Bytes;
use futures_util::FutureExt;
use tower::service_fn;

pub use cookie::SESSION_COOKIE;
pub use openapi::ApiInfo;
pub use response::{EXECUTED_BY_HEADER, INSTANCE_HEADER};
pub(crate) use server::HttpServer;

use crate::error::{Error, ErrorKind};
use crate::message::JSON;
use crate::registry::CommandDescriptor;
use crate::runtime::Runtime;
pub(crate) use cookie::session_cookie;
pub(crate) use response::problem;
use route::{Route, handle};

/// The router of every `#[http]` command in the binary, plus `/healthz`, `/readyz`,
/// `/openapi.json` and problem-document fallbacks for 404 and 405.
pub(crate) fn router(
    runtime: Arc<Runtime>,
    commands: &[&'static CommandDescriptor],
    api_info: Option<&ApiInfo>,
) -> Result<Router, Error> {
    let instance = HeaderValue::from_str(&runtime.instance_id).map_err(|_| {
        Error::bad_request("COHORT_INSTANCE_ID must be printable ASCII").with_code("invalid_config")
    })?;
    let mut by_path: HashMap<&'static str, MethodRouter> = HashMap::new();
    for &command in commands {
        let Some(http) = command.http else { continue };
        let route = Arc::new(Route::new(runtime.clone(), command, http, instance.clone()));
        let filter = method_filter(http.method)?;
        // A service rather than a handler: axum's handler would box the request with the future.
        let service = service_fn(move |request: Request| {
            handle(route.clone(), request).map(Ok::<_, Infallible>)
        });
        let handler = on_service(filter, service);
        let entry = by_path
            .remove(http.path)
            .map_or(handler.clone(), |existing| existing.merge(handler));
        by_path.insert(http.path, entry);
    }
    let mut router = Router::new();
    for (path, methods) in by_path {
        router = router.route(path, methods);
    }
    let api_info = api_info.map_or_else(|| ApiInfo::of_routes(commands), ApiInfo::clone);
    let openapi = Bytes::from(openapi::openapi(commands, &api_info).to_string());
    let (health_instance, ready_runtime) = (instance.clone(), runtime.clone());
    let (not_found, not_allowed) = (instance.clone(), instance);
    Ok(router
        .route("/healthz", get(move || healthz(health_instance.clone())))
        .route("/readyz", get(move || readyz(ready_runtime.clone())))
        .route("/openapi.json", get(move || serve_openapi(openapi.clone())))
        .fallback(move || async move {
            problem(&not_found, &Error::not_found("no route matches this path"))
        })
        .method_not_allowed_fallback(move || async move {
            let err = Error::new(
                ErrorKind::MethodNotAllowed,
                "this route does not take that method",
            );
            problem(&not_allowed, &err)
        }))
}

fn method_filter(method: &str) -> Result<MethodFilter, Error> {
    Method::from_bytes(method.as_bytes())
        .ok()
        .and_then(|m| MethodFilter::try_from(m).ok())
        .ok_or_else(|| Error::internal(format!("unsupported HTTP method `{method}`")))
}

async fn healthz(instance: HeaderValue) -> Response {
    ok(instance, r#"{"status":"ok"}"#.to_owned())
}

/// 200 while the instance can take traffic; its body lists what the last version drift check
/// found, as `warnings`: drift is the operator's to fix, not a reason to take the instance out.
async fn readyz(runtime: Arc<Runtime>) -> Response {
    let instance =
        HeaderValue::from_str(&runtime.instance_id).unwrap_or(HeaderValue::from_static("?"));
    if let Err(err) = runtime.is_ready().await {
        return problem(&instance, &Error::unavailable(err.message().to_owned()));
    }
    let warnings: Vec<String> = runtime
        .drift
        .findings()
        .iter()
        .map(ToString::to_string)
        .collect();
    if warnings.is_empty() {
        return healthz(instance).await;
    }
    let body = serde_json::json!({"status": "ok", "warnings": warnings});
    ok(instance, body.to_string())
}

/// A 200 with the JSON `body`, naming the instance that answers.
fn ok(instance: HeaderValue, body: String) -> Response {
    let mut response = ([(header::CONTENT_TYPE, JSON)], body).into_response();
    response.headers_mut().insert(INSTANCE_HEADER, instance);
    response
}

async fn serve_openapi(document: Bytes) -> Response {
    ([(header::CONTENT_TYPE, JSON)], document).into_response()
}
