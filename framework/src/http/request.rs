//! What a command takes from an HTTP request: path and query parameters typed as its input's
//! fields, the JSON body, the caller's trace and the session cookie.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use bytes::Bytes;
use futures_util::FutureExt;
use serde_json::{Map, Value};

use super::cookie::session_cookie;
use crate::error::{Error, ErrorKind};
use crate::input::malformed_json;
use crate::message::Metadata;
use crate::registry::{CommandDescriptor, HttpRoute, route_params, schema_property};

/// The client's key for running a request once however often it is sent (IETF draft).
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// What a route's input is made of: which parameters it has, and the JSON type of each input field
/// that a path or query parameter may fill.
pub(super) struct InputShape {
    has_params: bool,
    fields: HashMap<String, FieldType>,
}

impl InputShape {
    pub(super) fn of(command: &CommandDescriptor, http: HttpRoute) -> InputShape {
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
        InputShape {
            has_params: route_params(http.path).next().is_some(),
            fields,
        }
    }
}

/// How a parameter's text becomes JSON: `/orders/42` must fill a `u64` field with `42`, not `"42"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldType {
    Integer,
    Number,
    Boolean,
    Text,
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
        FieldType::Integer => (raw.parse::<i64>().ok().map(Value::from))
            .or_else(|| raw.parse::<u64>().ok().map(Value::from)),
        FieldType::Number => raw.parse::<f64>().ok().map(Value::from),
        FieldType::Boolean => raw.parse::<bool>().ok().map(Value::from),
        FieldType::Text => None,
    };
    parsed.unwrap_or_else(|| Value::String(raw.to_owned()))
}

/// What a command takes from the head of its HTTP request. The head itself is dropped before the
/// request waits on anything, which keeps every request's state small.
pub(super) struct Head {
    path_params: Option<RawPathParams>,
    pub(super) query: Option<String>,
    pub(super) meta: Metadata,
}

impl Head {
    pub(super) fn read(shape: &InputShape, mut parts: Parts) -> Result<Head, Error> {
        let path_params = match shape.has_params {
            false => None,
            true => Some(path_params(&mut parts)?),
        };
        Ok(Head {
            path_params,
            query: parts.uri.query().map(str::to_owned),
            meta: request_meta(&parts.headers)?,
        })
    }

    pub(super) fn params(&self) -> Vec<(&str, &str)> {
        self.path_params.iter().flat_map(|p| p.iter()).collect()
    }
}

/// The route's path parameters. axum's extractor reads them from the request's extensions without
/// waiting, so it is ready when first polled.
fn path_params(parts: &mut Parts) -> Result<RawPathParams, Error> {
    match RawPathParams::from_request_parts(parts, &()).now_or_never() {
        Some(params) => params.map_err(|rejection| Error::bad_request(rejection.body_text())),
        None => Err(Error::internal("the path parameters were not ready")),
    }
}

/// The whole body, refused with a 413 past `limit` bytes and a 408 when it has not all arrived
/// within `timeout` (a client that stalls must not hold its connection and this task forever).
///
/// The body is copied out of hyper's read buffer: a body that arrived with its head is a slice of
/// the connection's whole buffer, and a request waiting on its command would hold that buffer while
/// hyper reads the connection into a new one.
pub(super) async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, Error> {
    let read = axum::body::to_bytes(body, limit);
    let Ok(body) = tokio::time::timeout(timeout, read).await else {
        let late = format!(
            "the body did not arrive within {}",
            humantime::format_duration(timeout)
        );
        return Err(Error::new(ErrorKind::RequestTimeout, late));
    };
    let body = body.map_err(|err| {
        let too_large = std::error::Error::source(&err)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        match too_large {
            true => Error::new(
                ErrorKind::PayloadTooLarge,
                format!("the body is larger than {limit} bytes"),
            ),
            false => Error::bad_request(format!("cannot read the body: {err}")),
        }
    })?;
    Ok(Bytes::copy_from_slice(&body))
}

/// The metadata an HTTP request gives its command: the session cookie and the idempotency key
/// (the trace is the request's span's).
fn request_meta(headers: &HeaderMap) -> Result<Metadata, Error> {
    Ok(Metadata {
        session: session_cookie(headers),
        idempotency_key: idempotency_key(headers)?,
        ..Metadata::default()
    })
}

/// The `Idempotency-Key` header, if the request has one: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Error> {
    let Some(value) = headers.get(&IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default();
    let valid = (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(Error::bad_request(
            "the Idempotency-Key header must be 1 to 255 visible ASCII characters",
        )
        .with_field("Idempotency-Key")
        .with_code("invalid_idempotency_key"));
    }
    Ok(Some(key.to_owned()))
}

/// The command's input: path parameters over query parameters over the JSON body. Without
/// parameters the body goes through untouched (the common case, and the fast one).
pub(super) fn build_input(
    shape: &InputShape,
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
        .filter(|(name, _)| shape.fields.contains_key(name))
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
            Err(e) => return Err(malformed_json(e)),
        },
    };
    let fill = |input: &mut Map<String, Value>, name: &str, raw: &str| {
        let kind = shape.fields.get(name).copied().unwrap_or(FieldType::Text);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_does_not_share_the_buffer_it_was_read_from() {
        // What hyper hands over: a slice of the connection's buffer, which hyper still holds.
        let buffer = Bytes::from(vec![b'x'; 8192]);
        let body = Body::from(buffer.slice(..64));
        let read = read_body(body, 1024, Duration::from_secs(1))
            .await
            .expect("a short body within its limit is read");
        assert_eq!(read, buffer.slice(..64));
        assert!(
            read.is_unique(),
            "the body still holds the connection's buffer"
        );
    }

    #[test]
    fn params_take_the_type_of_their_field() {
        assert_eq!(param_value("42", FieldType::Integer), Value::from(42));
        assert_eq!(param_value("x", FieldType::Integer), Value::from("x"));
        let max = u64::MAX.to_string();
        assert_eq!(param_value(&max, FieldType::Integer), Value::from(u64::MAX));
        assert_eq!(param_value("true", FieldType::Boolean), Value::from(true));
        assert_eq!(param_value("42", FieldType::Text), Value::from("42"));
    }
}
