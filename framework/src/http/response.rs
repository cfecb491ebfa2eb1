//! Responses: a command's reply as the route's success, or an RFC 9457 problem, each naming the
//! instance that answered and the one that ran the command.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;

use super::cookie::set_session_cookie;
use crate::config::Config;
use crate::error::Error;
use crate::message::{JSON, Message, PROBLEM_JSON};

/// The instance that answered the HTTP request.
pub const INSTANCE_HEADER: HeaderName = HeaderName::from_static("x-cohort-instance");
/// The instance that ran the command behind it.
pub const EXECUTED_BY_HEADER: HeaderName = HeaderName::from_static("x-cohort-executed-by");

/// The response to a command's reply: its body with the route's `status`, or the problem document
/// the executing instance wrote, passed on as it came.
pub(super) fn respond(
    config: &Config,
    status: StatusCode,
    instance: &HeaderValue,
    reply: Message,
) -> Response {
    let executed_by = reply.meta.instance.as_deref();
    if reply.status() >= 300 {
        let status = StatusCode::from_u16(reply.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut response = problem_response(status, instance, executed_by, reply.payload);
        set_session_cookie(config, &reply.meta, response.headers_mut());
        return response;
    }
    let body = match status {
        StatusCode::NO_CONTENT => Body::empty(),
        _ => Body::from(reply.payload),
    };
    // Room for every header up front: growing the map costs more than filling it.
    let mut headers = HeaderMap::with_capacity(4);
    if status != StatusCode::NO_CONTENT {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    }
    instance_headers(&mut headers, instance, executed_by);
    set_session_cookie(config, &reply.meta, &mut headers);
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The problem response of an error met on this instance, before or instead of a reply.
pub(crate) fn problem(instance: &HeaderValue, err: &Error) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    problem_response(status, instance, None, Bytes::from(err.to_problem_json()))
}

fn problem_response(
    status: StatusCode,
    instance: &HeaderValue,
    executed_by: Option<&str>,
    document: Bytes,
) -> Response {
    let mut response = Response::new(Body::from(document));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    instance_headers(headers, instance, executed_by);
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
