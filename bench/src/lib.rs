//! Shared pieces of the benchmark contenders: the echo payloads and the
//! small helpers both binaries use, so raw axum and the baseline do exactly
//! the same JSON work per request; and the events scenario's ([`events`]).

pub mod events;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// Request body of `POST /echo`: `{"text": string, "n": integer}`.
#[derive(Debug, Deserialize, Serialize)]
pub struct EchoIn {
    pub text: String,
    pub n: i64,
}

/// Reply body: the text back, `n + 1` and which instance answered.
#[derive(Debug, Serialize)]
pub struct EchoOut<'a> {
    pub text: &'a str,
    pub n: i64,
    pub instance: &'a str,
}

/// Computes the echo reply as JSON bytes; `None` when `n + 1` overflows
/// (treated as bad input by the callers).
pub fn echo_reply(input: &EchoIn, instance: &str) -> Option<Vec<u8>> {
    let out = EchoOut {
        text: &input.text,
        n: input.n.checked_add(1)?,
        instance,
    };
    serde_json::to_vec(&out).ok()
}

/// Reads an environment variable, falling back to `default` when unset or empty.
pub fn env_or(name: &str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => default.to_owned(),
    }
}

/// A response with `content-type: application/json`.
pub fn json_response(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut resp = (status, body.into()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A small JSON error body, e.g. `{"error":"bad request"}`.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    json_response(status, body)
}
