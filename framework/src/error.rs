//! `cohort::Error`: one error type for handlers, the runtime and the wire.
//!
//! An error carries a kind (which fixes its HTTP status), a stable machine-readable code, a message
//! for humans and, for bad input, the path of the field at fault. On the wire and over HTTP it is an
//! RFC 9457 problem document, so a client in any language can read it. What only the operator may
//! see (a server's address, a key, the library's error) is its cause: logged, never sent.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::message::random_hex;

/// The code of every error that means "the state store cannot be reached".
#[cfg(feature = "redis")]
pub(crate) const STORE_UNAVAILABLE: &str = "state_store_unavailable";
/// The code of every error that means "the message broker cannot be reached".
pub(crate) const BROKER_UNAVAILABLE: &str = "broker_unavailable";

/// What went wrong, in terms a caller can act on. Each kind has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 400: the request is malformed (not JSON, wrong shape of envelope).
    BadRequest,
    /// 401: no or bad credentials.
    Unauthorized,
    /// 403: authenticated, but not allowed.
    Forbidden,
    /// 404: no such resource or route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 408: the client did not send its request in time (a stalled body).
    RequestTimeout,
    /// 409: the request conflicts with the current state (taken name, not enough stock).
    Conflict,
    /// 413: the body is larger than the configured limit.
    PayloadTooLarge,
    /// 422: well-formed JSON whose fields are missing or of the wrong type or value.
    Invalid,
    /// 500: a bug or an unexpected failure; details are logged, never sent.
    Internal,
    /// 503: no instance serves the command.
    NoResponders,
    /// 503: a dependency (broker, state store) is unreachable, or the instance is shutting down.
    Unavailable,
    /// 504: the deadline passed before the command finished.
    Timeout,
}

impl ErrorKind {
    /// The HTTP status of this kind.
    pub const fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::Conflict => 409,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Invalid => 422,
            ErrorKind::Internal => 500,
            ErrorKind::NoResponders | ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
        }
    }

    /// The default stable code of this kind, used when the error sets none of its own.
    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::Conflict => "conflict",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Internal => "internal",
            ErrorKind::NoResponders => "no_responders",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
        }
    }

    /// The short title of the problem document.
    pub const fn title(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "Bad Request",
            ErrorKind::Unauthorized => "Unauthorized",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::NotFound => "Not Found",
            ErrorKind::MethodNotAllowed => "Method Not Allowed",
            ErrorKind::RequestTimeout => "Request Timeout",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::PayloadTooLarge => "Payload Too Large",
            ErrorKind::Invalid => "Unprocessable Content",
            ErrorKind::Internal => "Internal Server Error",
            ErrorKind::NoResponders | ErrorKind::Unavailable => "Service Unavailable",
            ErrorKind::Timeout => "Gateway Timeout",
        }
    }

    /// The kind of an HTTP status: another 4xx is a bad request, another 5xx an internal error.
    pub(crate) fn from_status(status: u16) -> ErrorKind {
        match status {
            400 => ErrorKind::BadRequest,
            401 => ErrorKind::Unauthorized,
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            405 => ErrorKind::MethodNotAllowed,
            408 => ErrorKind::RequestTimeout,
            409 => ErrorKind::Conflict,
            413 => ErrorKind::PayloadTooLarge,
            422 => ErrorKind::Invalid,
            503 => ErrorKind::Unavailable,
            504 => ErrorKind::Timeout,
            other if (400..500).contains(&other) => ErrorKind::BadRequest,
            _ => ErrorKind::Internal,
        }
    }
}

/// The error of every Cohort API and handler.
///
/// ```
/// use cohort::{Error, ErrorKind};
///
/// let err = Error::conflict("not enough stock").with_code("insufficient_stock");
/// assert_eq!(err.kind(), ErrorKind::Conflict);
/// assert_eq!(err.status(), 409);
/// assert_eq!(err.code(), "insufficient_stock");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    code: Cow<'static, str>,
    message: String,
    /// Boxed, and absent from most errors: every `Result` of the crate, and every future that
    /// holds one, carries room for an error.
    details: Option<Box<Details>>,
}

/// What some errors carry besides their kind, code and message.
#[derive(Clone, Default, PartialEq, Eq)]
struct Details {
    field: Option<String>,
    trace_id: Option<String>,
    cause: Option<String>,
}

impl Error {
    /// An error of `kind` with a message for humans.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            code: Cow::Borrowed(kind.code()),
            message: message.into(),
            details: None,
        }
    }

    fn details(&mut self) -> &mut Details {
        self.details.get_or_insert_default()
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }
    /// 401: missing or wrong credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }
    /// 403: not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }
    /// 404: not found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// 409: conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    /// 422: the input field at `field` (a path such as `items[0].qty`) is invalid.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message).with_field(field)
    }
    /// 500: an unexpected failure. The message is logged, never sent to the client.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// 503: a dependency is unreachable. Say which in the client's terms ("the payment provider is
    /// unavailable"); its address and what failed belong in [`Error::with_cause`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// 503: the state store cannot be reached; `cause` (the server, the key, the failure) is logged.
    #[cfg(feature = "redis")]
    pub(crate) fn store_unavailable(cause: impl Into<String>) -> Self {
        Self::unavailable("the state store is unavailable")
            .with_code(STORE_UNAVAILABLE)
            .with_cause(cause)
    }

    /// 503: the message broker cannot be reached; `cause` (the server, the subject, the failure)
    /// is logged.
    pub(crate) fn broker_unavailable(cause: impl Into<String>) -> Self {
        Self::unavailable("the message broker is unavailable")
            .with_code(BROKER_UNAVAILABLE)
            .with_cause(cause)
    }

    /// Replaces the stable code (default: the kind's code, such as `conflict`).
    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.code = code.into();
        self
    }
    /// Names the input field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.details().field = Some(field.into());
        self
    }
    /// Attaches what only the operator may see: the address of a server, a key, the error of a
    /// library. It is logged with the trace id (and shown by `Display`), never put in the problem
    /// document a client gets.
    pub fn with_cause(mut self, cause: impl Into<String>) -> Self {
        self.details().cause = Some(cause.into());
        self
    }
    /// Attaches the trace id under which the details were logged.
    pub fn with_trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.details().trace_id = Some(trace_id.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }
    /// The stable machine-readable code.
    pub fn code(&self) -> &str {
        &self.code
    }
    /// The message for humans.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The path of the input field at fault, if any.
    pub fn field(&self) -> Option<&str> {
        self.details.as_ref()?.field.as_deref()
    }
    /// The trace id under which the details of a 5xx were logged.
    pub fn trace_id(&self) -> Option<&str> {
        self.details.as_ref()?.trace_id.as_deref()
    }
    /// What only the operator may see, if any (see [`Error::with_cause`]).
    pub fn cause(&self) -> Option<&str> {
        self.details.as_ref()?.cause.as_deref()
    }

    /// The RFC 9457 problem document of this error. A 500 never carries its message, and no error
    /// its cause: those stay in the log, under the trace id.
    pub fn to_problem(&self) -> Problem {
        let detail = if self.kind == ErrorKind::Internal {
            "an unexpected error occurred; quote the trace id when reporting it".to_owned()
        } else {
            self.message.clone()
        };
        Problem {
            kind: format!("https://cohort.rs/problems/{}", self.code),
            title: self.kind.title().to_owned(),
            status: self.status(),
            detail,
            code: self.code.to_string(),
            field: self.field().map(str::to_owned),
            trace_id: self.trace_id().map(str::to_owned),
        }
    }

    /// Rebuilds an error from a problem document received from another instance.
    pub fn from_problem(problem: Problem) -> Self {
        Error {
            kind: ErrorKind::from_status(problem.status),
            code: Cow::Owned(problem.code),
            message: problem.detail,
            details: (problem.field.is_some() || problem.trace_id.is_some()).then(|| {
                Box::new(Details {
                    field: problem.field,
                    trace_id: problem.trace_id,
                    cause: None,
                })
            }),
        }
    }

    /// Reads a problem body; a body that is not one becomes a 500 that says so.
    pub fn from_problem_json(status: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<Problem>(body) {
            Ok(problem) => Self::from_problem(problem),
            Err(_) => Self::new(
                ErrorKind::from_status(status),
                format!(
                    "status {status} with a body that is not a problem document: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            ),
        }
    }

    /// The problem document as JSON bytes.
    pub fn to_problem_json(&self) -> Vec<u8> {
        // A struct of strings and numbers always serializes.
        serde_json::to_vec(&self.to_problem()).unwrap_or_default()
    }
}

/// Readable text, so that `main` returning an error prints it as the user should read it (one
/// problem a line); `{:#?}` gives the fields.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !f.alternate() {
            return fmt::Display::fmt(self, f);
        }
        let mut s = f.debug_struct("Error");
        s.field("kind", &self.kind)
            .field("code", &self.code)
            .field("message", &self.message);
        if let Some(field) = self.field() {
            s.field("field", &field);
        }
        if let Some(trace_id) = self.trace_id() {
            s.field("trace_id", &trace_id);
        }
        if let Some(cause) = self.cause() {
            s.field("cause", &cause);
        }
        s.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)?;
        if let Some(field) = self.field() {
            write!(f, " at `{field}`")?;
        }
        if let Some(cause) = self.cause() {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl Error {
    /// The error of a handler that panicked while doing `what`.
    pub(crate) fn panicked(what: &str, panic: &(dyn std::any::Any + Send)) -> Error {
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic without a message");
        Error::internal(format!("{what} panicked: {message}"))
    }

    /// Logs a server-side error (5xx) with its details and cause, and gives it a trace id, the
    /// request's (`trace_id`) or a new one, for the client to quote: a 500 at ERROR, an outage or a
    /// timeout at WARN. Client errors, and errors that already carry a trace id (logged where
    /// they were met, another instance included), pass unchanged.
    pub(crate) fn logged(self, trace_id: Option<&str>, what: &str) -> Error {
        if self.status() < 500 || self.trace_id().is_some() {
            return self;
        }
        let trace_id = trace_id.map_or_else(|| random_hex(16), str::to_owned);
        match self.kind {
            ErrorKind::Internal => tracing::error!(trace_id = %trace_id, error = %self, "{what}"),
            _ => tracing::warn!(trace_id = %trace_id, error = %self, "{what}"),
        }
        self.with_trace_id(trace_id)
    }
}

impl From<std::convert::Infallible> for Error {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// An RFC 9457 problem document, with Cohort's extension members `code`, `field` and `trace_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Problem {
    /// A URI that names the problem type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The short summary of the status.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for humans.
    pub detail: String,
    /// The stable machine-readable code.
    pub code: String,
    /// The path of the input field at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The trace id under which the details were logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_round_trips_through_json() {
        let err = Error::invalid("items[0].qty", "expected a number").with_trace_id("t1");
        let back = Error::from_problem_json(422, &err.to_problem_json());
        assert_eq!(back, err);
    }

    #[test]
    fn internal_errors_hide_their_message() {
        let problem = Error::internal("db password is hunter2").to_problem();
        assert_eq!(problem.status, 500);
        assert!(!problem.detail.contains("hunter2"));
    }

    #[test]
    #[cfg(feature = "redis")]
    fn the_cause_is_shown_to_the_operator_and_never_sent() {
        let err =
            Error::store_unavailable("reading `cohort:orders:k` on Redis at `redis://db:6379`")
                .with_trace_id("t1");
        let problem = err.to_problem_json();
        let body = String::from_utf8_lossy(&problem);
        assert!(
            !body.contains("redis") && !body.contains("orders:k"),
            "{body}"
        );
        assert_eq!(err.to_problem().detail, "the state store is unavailable");
        assert_eq!(err.to_problem().trace_id.as_deref(), Some("t1"));
        assert!(err.to_string().contains("redis://db:6379"), "{err}");
        assert_eq!(
            err.cause(),
            Some("reading `cohort:orders:k` on Redis at `redis://db:6379`")
        );
    }

    #[test]
    fn server_errors_get_a_trace_id_once_and_client_errors_none() {
        let logged = Error::broker_unavailable("NATS at `nats://n:4222` is down").logged(None, "x");
        let trace_id = logged.trace_id().expect("a trace id").to_owned();
        assert_eq!(trace_id.len(), 32);
        let again = logged.logged(Some("other"), "x");
        assert_eq!(again.trace_id(), Some(trace_id.as_str()));
        assert_eq!(
            Error::conflict("taken").logged(Some("t"), "x").trace_id(),
            None
        );
    }

    #[test]
    fn debug_output_is_the_readable_text() {
        let err = Error::internal("the dispatch table is invalid:\n  - a\n  - b");
        assert_eq!(
            format!("{err:?}"),
            "the dispatch table is invalid:\n  - a\n  - b (internal)"
        );
        assert!(format!("{err:#?}").contains("kind: Internal"));
    }

    #[test]
    fn panics_become_internal_errors_with_their_message() {
        let err = Error::panicked("command `x`", &"boom");
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert_eq!(err.message(), "command `x` panicked: boom");
    }

    #[test]
    fn garbage_problem_body_keeps_the_status() {
        let err = Error::from_problem_json(503, b"upstream down");
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.message().contains("upstream down"));
    }
}
