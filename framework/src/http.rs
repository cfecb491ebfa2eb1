//! The HTTP layer: routes from `#[http]`, each turned into a command sent over the broker.
//!
//! It never runs a handler itself. It assembles the input (path parameters, then query
//! parameters, then the JSON body), sends the command, and turns the reply into a response:
//! the body with the route's status, or an RFC 9457 problem. Every response says which instance
//! answered (`x-cohort-instance`) and, when a command ran, which instance ran it
//! (`x-cohort-executed-by`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::dispatch::{Runtime, Target, log_if_internal};
use crate::error::{Error, ErrorKind};
use crate::message::{JSON, Message, Metadata, PROBLEM_JSON, child_traceparent};
use crate::registry::{CommandDescriptor, HttpRoute, route_params, schema_property};
use crate::session;

/// The instance that answered the HTTP request.
pub const INSTANCE_HEADER: HeaderName = HeaderName::from_static("x-cohort-instance");
/// The instance that ran the command behind it.
pub const EXECUTED_BY_HEADER: HeaderName = HeaderName::from_static("x-cohort-executed-by");
/// The W3C trace context of a request, which its command continues.
const TRACEPARENT: HeaderName = HeaderName::from_static(crate::message::header::TRACEPARENT);
/// The cookie that carries the session id.
pub const SESSION_COOKIE: &str = "cohort_session";

/// The router of every `#[http]` command in the binary, plus `/healthz`, `/readyz`,
/// `/openapi.json` and problem-document fallbacks for 404 and 405.
pub(crate) fn router(
    runtime: Arc<Runtime>,
    commands: &[&'static CommandDescriptor],
) -> Result<Router, Error> {
    let instance = HeaderValue::from_str(&runtime.instance_id).map_err(|_| {
        Error::bad_request("COHORT_INSTANCE_ID must be printable ASCII").with_code("invalid_config")
    })?;
    let mut by_path: HashMap<&'static str, MethodRouter> = HashMap::new();
    for &command in commands {
        let Some(http) = command.http else { continue };
        let route = Arc::new(Route::new(runtime.clone(), command, http, instance.clone()));
        let filter = method_filter(http.method)?;
        let handler = on(filter, move |request: Request| {
            handle(route.clone(), request)
        });
        let entry = by_path
            .remove(http.path)
            .map_or(handler.clone(), |existing| existing.merge(handler));
        by_path.insert(http.path, entry);
    }
    let mut router = Router::new();
    for (path, methods) in by_path {
        router = router.route(path, methods);
    }
    let openapi = Arc::new(crate::http::openapi(commands));
    let (health_instance, ready_runtime) = (instance.clone(), runtime.clone());
    let (not_found, not_allowed) = (instance.clone(), instance.clone());
    Ok(router
        .route("/healthz", get(move || healthz(health_instance.clone())))
        .route("/readyz", get(move || readyz(ready_runtime.clone())))
        .route("/openapi.json", get(move || serve_openapi(openapi.clone())))
        .fallback(move || async move {
            problem(
                &not_found,
                None,
                &Error::not_found("no route matches this path"),
            )
        })
        .method_not_allowed_fallback(move || async move {
            problem(
                &not_allowed,
                None,
                &Error::new(
                    ErrorKind::MethodNotAllowed,
                    "this route does not take that method",
                ),
            )
        }))
}

fn method_filter(method: &str) -> Result<MethodFilter, Error> {
    Method::from_bytes(method.as_bytes())
        .ok()
        .and_then(|m| MethodFilter::try_from(m).ok())
        .ok_or_else(|| Error::internal(format!("unsupported HTTP method `{method}`")))
}

/// One route and what it needs to build the command's input.
struct Route {
    runtime: Arc<Runtime>,
    command: &'static CommandDescriptor,
    status: StatusCode,
    instance: HeaderValue,
    subject: String,
    has_params: bool,
    /// The JSON type of each input field that a path or query parameter may fill.
    fields: HashMap<String, FieldType>,
}

/// How a parameter's text becomes JSON: `/orders/42` must fill a `u64` field with `42`, not `"42"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldType {
    Integer,
    Number,
    Boolean,
    Text,
}

impl Route {
    fn new(
        runtime: Arc<Runtime>,
        command: &'static CommandDescriptor,
        http: HttpRoute,
        instance: HeaderValue,
    ) -> Self {
        let schema = (command.input_schema)();
        let fields = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|props| {
                props
                    .keys()
                    .map(|name| (name.clone(), field_type(&schema, name)))
                    .collect()
            })
            .unwrap_or_default();
        debug_assert!(route_params(http.path).all(|p| schema_property(&schema, p).is_some()));
        Route {
            subject: runtime
                .subjects
                .command(command.service, command.version, command.name),
            has_params: route_params(http.path).next().is_some(),
            runtime,
            command,
            status: StatusCode::from_u16(http.status).unwrap_or(StatusCode::OK),
            instance,
            fields,
        }
    }

    fn target(&self) -> Target<'_> {
        Target {
            service: self.command.service,
            version: self.command.version,
            name: self.command.name,
            subject: &self.subject,
            timeout_ms: self.command.timeout_ms,
        }
    }
}

fn field_type(schema: &schemars::Schema, name: &str) -> FieldType {
    let Some(property) = schema_property(schema, name) else {
        return FieldType::Text;
    };
    let types: Vec<&str> = match property.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    match types.into_iter().find(|t| *t != "null") {
        Some("integer") => FieldType::Integer,
        Some("number") => FieldType::Number,
        Some("boolean") => FieldType::Boolean,
        _ => FieldType::Text,
    }
}

/// A parameter as JSON. Text that does not parse as the field's type stays text, so the command
/// reports a 422 naming the field instead of the HTTP layer guessing.
fn param_value(raw: &str, kind: FieldType) -> Value {
    let parsed = match kind {
        FieldType::Integer => raw.parse::<i64>().ok().map(Value::from),
        FieldType::Number => raw.parse::<f64>().ok().map(Value::from),
        FieldType::Boolean => raw.parse::<bool>().ok().map(Value::from),
        FieldType::Text => None,
    };
    parsed.unwrap_or_else(|| Value::String(raw.to_owned()))
}

async fn handle(route: Arc<Route>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let head = match Head::read(&route, parts).await {
        Ok(head) => head,
        Err(err) => return problem(&route.instance, None, &err),
    };
    let body = match read_body(body, route.runtime.config.body_limit).await {
        Ok(body) => body,
        Err(err) => return problem(&route.instance, None, &err),
    };
    let input = match build_input(&route, &head.params(), head.query.as_deref(), body) {
        Ok(input) => input,
        Err(err) => return problem(&route.instance, None, &err),
    };
    // Kept for the log line of a 500: the metadata itself goes with the command.
    let trace_id = head.meta.trace_id().map(str::to_owned);
    match route.runtime.invoke(route.target(), input, head.meta).await {
        Ok(reply) => respond(&route, reply),
        Err(err) => {
            let err = log_if_internal(trace_id.as_deref(), err, "HTTP request failed");
            problem(&route.instance, None, &err)
        }
    }
}

/// What a command takes from the head of its HTTP request. The head itself is dropped before the
/// request waits on anything, which keeps every request's state small.
struct Head {
    path_params: Option<RawPathParams>,
    query: Option<String>,
    meta: Metadata,
}

impl Head {
    async fn read(route: &Route, mut parts: Parts) -> Result<Head, Error> {
        let path_params = match route.has_params {
            false => None,
            true => Some(
                RawPathParams::from_request_parts(&mut parts, &())
                    .await
                    .map_err(|rejection| Error::bad_request(rejection.body_text()))?,
            ),
        };
        Ok(Head {
            path_params,
            query: parts.uri.query().map(str::to_owned),
            meta: request_meta(&parts.headers),
        })
    }

    fn params(&self) -> Vec<(&str, &str)> {
        self.path_params.iter().flat_map(|p| p.iter()).collect()
    }
}

/// The whole body, refused with a 413 past `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Error> {
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        let too_large = std::error::Error::source(&err)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        match too_large {
            true => Error::new(
                ErrorKind::PayloadTooLarge,
                format!("the body is larger than {limit} bytes"),
            ),
            false => Error::bad_request(format!("cannot read the body: {err}")),
        }
    })
}

/// The metadata an HTTP request gives its command: the caller's trace, if it has one (otherwise
/// the trace starts where the command runs), and the session cookie.
fn request_meta(headers: &HeaderMap) -> Metadata {
    let traceparent = headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok());
    Metadata {
        traceparent: traceparent.map(|parent| child_traceparent(Some(parent))),
        session: session_cookie(headers),
        ..Metadata::default()
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|cookie| {
            cookie
                .trim()
                .strip_prefix(SESSION_COOKIE)?
                .strip_prefix('=')
        })
        .find(|id| session::is_valid_id(id))
        .map(str::to_owned)
}

/// The command's input: path parameters over query parameters over the JSON body. Without
/// parameters the body goes through untouched (the common case, and the fast one).
fn build_input(
    route: &Route,
    params: &[(&str, &str)],
    query: Option<&str>,
    body: Bytes,
) -> Result<Bytes, Error> {
    let query_pairs: Vec<(String, String)> = match query {
        Some(query) if !query.is_empty() => serde_urlencoded::from_str(query)
            .map_err(|e| Error::bad_request(format!("malformed query string: {e}")))?,
        _ => Vec::new(),
    };
    let query_pairs: Vec<_> = query_pairs
        .into_iter()
        .filter(|(name, _)| route.fields.contains_key(name))
        .collect();
    if params.is_empty() && query_pairs.is_empty() {
        return Ok(body);
    }
    let mut input = match body.is_empty() {
        true => Map::new(),
        false => match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(object)) => object,
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    "the body must be a JSON object",
                ));
            }
            Err(e) => {
                return Err(
                    Error::bad_request(format!("malformed JSON: {e}")).with_code("malformed_json")
                );
            }
        },
    };
    let fill = |input: &mut Map<String, Value>, name: &str, raw: &str| {
        let kind = route.fields.get(name).copied().unwrap_or(FieldType::Text);
        input.insert(name.to_owned(), param_value(raw, kind));
    };
    for (name, raw) in &query_pairs {
        fill(&mut input, name, raw);
    }
    for (name, raw) in params {
        fill(&mut input, name, raw);
    }
    serde_json::to_vec(&input)
        .map(Bytes::from)
        .map_err(|e| Error::internal(format!("cannot encode the input: {e}")))
}

fn respond(route: &Route, reply: Message) -> Response {
    let executed_by = reply.meta.instance.as_deref();
    if reply.status() >= 300 {
        let err = Error::from_problem_json(reply.status(), &reply.payload);
        let mut response = problem(&route.instance, executed_by, &err);
        set_session_cookie(&route.runtime, &reply.meta, response.headers_mut());
        return response;
    }
    let body = match route.status {
        StatusCode::NO_CONTENT => Body::empty(),
        _ => Body::from(reply.payload),
    };
    // Room for every header up front: growing the map costs more than filling it.
    let mut headers = HeaderMap::with_capacity(4);
    if route.status != StatusCode::NO_CONTENT {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    }
    instance_headers(&mut headers, &route.instance, executed_by);
    set_session_cookie(&route.runtime, &reply.meta, &mut headers);
    let mut response = Response::new(body);
    *response.status_mut() = route.status;
    *response.headers_mut() = headers;
    response
}

fn instance_headers(headers: &mut HeaderMap, instance: &HeaderValue, executed_by: Option<&str>) {
    headers.insert(INSTANCE_HEADER, instance.clone());
    if let Some(value) = executed_by_header(instance, executed_by) {
        headers.insert(EXECUTED_BY_HEADER, value);
    }
}

/// The `x-cohort-executed-by` value naming the instance that ran the command, if one did.
fn executed_by_header(instance: &HeaderValue, executed_by: Option<&str>) -> Option<HeaderValue> {
    match executed_by {
        Some(id) if id.as_bytes() == instance.as_bytes() => Some(instance.clone()),
        Some(id) => HeaderValue::from_str(id).ok(),
        None => None,
    }
}

fn set_session_cookie(runtime: &Runtime, reply: &Metadata, headers: &mut HeaderMap) {
    let secure = if runtime.config.session_cookie_secure {
        "; Secure"
    } else {
        ""
    };
    let cookie = match (&reply.session_set, reply.session_clear) {
        (Some(id), _) if session::is_valid_id(id) => format!(
            "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            runtime.config.session_ttl.as_secs()
        ),
        (_, true) => {
            format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}")
        }
        _ => return,
    };
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.append(header::SET_COOKIE, value);
    }
}

/// An RFC 9457 problem response.
fn problem(instance: &HeaderValue, executed_by: Option<&str>, err: &Error) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, err.to_problem_json()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    instance_headers(headers, instance, executed_by);
    response
}

async fn healthz(instance: HeaderValue) -> Response {
    let mut response = ([(header::CONTENT_TYPE, JSON)], r#"{"status":"ok"}"#).into_response();
    response.headers_mut().insert(INSTANCE_HEADER, instance);
    response
}

async fn readyz(runtime: Arc<Runtime>) -> Response {
    let instance =
        HeaderValue::from_str(&runtime.instance_id).unwrap_or(HeaderValue::from_static("?"));
    match runtime.is_ready().await {
        Ok(()) => healthz(instance).await,
        Err(err) => problem(
            &instance,
            None,
            &Error::unavailable(err.message().to_owned()),
        ),
    }
}

async fn serve_openapi(document: Arc<Value>) -> Response {
    ([(header::CONTENT_TYPE, JSON)], document.to_string()).into_response()
}

/// An OpenAPI 3.1 document of the HTTP routes, from the commands' JSON schemas.
pub fn openapi(commands: &[&'static CommandDescriptor]) -> Value {
    let mut paths = Map::new();
    for command in commands {
        let Some(http) = command.http else { continue };
        let params: Vec<Value> = route_params(http.path)
            .map(|name| serde_json::json!({"name": name, "in": "path", "required": true, "schema": {}}))
            .collect();
        let operation = serde_json::json!({
            "operationId": command.name,
            "summary": command.description,
            "tags": [command.service],
            "parameters": params,
            "requestBody": {"content": {JSON: {"schema": (command.input_schema)()}}},
            "responses": {
                http.status.to_string(): {"description": "success", "content": {JSON: {"schema": (command.output_schema)()}}},
                "default": {"description": "an RFC 9457 problem", "content": {PROBLEM_JSON: {}}},
            },
        });
        let path_item = paths
            .entry(http.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = path_item {
            item.insert(http.method.to_ascii_lowercase(), operation);
        }
    }
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "Cohort API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_take_the_type_of_their_field() {
        assert_eq!(param_value("42", FieldType::Integer), Value::from(42));
        assert_eq!(param_value("x", FieldType::Integer), Value::from("x"));
        assert_eq!(param_value("true", FieldType::Boolean), Value::from(true));
        assert_eq!(param_value("42", FieldType::Text), Value::from("42"));
    }

    #[test]
    fn session_cookie_ignores_forged_ids() {
        let valid = "a".repeat(64);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("other=1; cohort_session=../etc"),
        );
        assert_eq!(session_cookie(&headers), None);
        headers.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("cohort_session={valid}")).expect("ascii"),
        );
        assert_eq!(session_cookie(&headers), Some(valid));
    }
}
