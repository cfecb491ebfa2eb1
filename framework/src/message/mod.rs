//! The envelope every command, reply and event travels in, and its wire form.
//!
//! The body is the payload's JSON itself; everything else rides in headers, so that a plain NATS
//! client in any language can call a command or read an event without Cohort's code.

mod ids;
mod subjects;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

#[cfg(feature = "otel")]
pub(crate) use ids::flags_of;
pub(crate) use ids::{child_traceparent, new_traceparent, random_hex, trace_id_of};
pub use subjects::Subjects;

/// Header names of the wire protocol.
pub mod header {
    /// A unique id per message (also sent as `Nats-Msg-Id` on events, for JetStream dedup).
    pub const MESSAGE_ID: &str = "Cohort-Message-Id";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// The authenticated principal, as the HTTP layer or the calling handler saw it.
    pub const PRINCIPAL: &str = "Cohort-Principal";
    /// The tenant the work belongs to.
    pub const TENANT: &str = "Cohort-Tenant";
    /// The session id; the session's data lives in the state store.
    pub const SESSION: &str = "Cohort-Session";
    /// Absolute deadline, in milliseconds since the Unix epoch.
    pub const DEADLINE: &str = "Cohort-Deadline";
    /// The instance that sent the message (on a reply: the instance that executed the command).
    pub const INSTANCE: &str = "Cohort-Instance";
    /// The service that sent the message.
    pub const SERVICE: &str = "Cohort-Service";
    /// `application/problem+json` on an error reply; absent means `application/json`.
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// The HTTP-like status of a reply, absent on a success (200); `100` on a progress message,
    /// which tells a caller that asked for progress that its command still runs.
    pub const STATUS: &str = "Cohort-Status";
    /// On a reply: the session id the HTTP layer must now send as its cookie.
    pub const SESSION_SET: &str = "Cohort-Session-Set";
    /// On a reply: the session was destroyed; the HTTP layer clears its cookie.
    pub const SESSION_CLEAR: &str = "Cohort-Session-Clear";
    /// On a dead-lettered event: the last error.
    pub const ERROR: &str = "Cohort-Error";
    /// On a command: the caller's idempotency key (HTTP `Idempotency-Key`): the command runs once
    /// per key and input, and a repeat gets the first reply.
    pub const IDEMPOTENCY_KEY: &str = "Cohort-Idempotency-Key";
    /// With a cluster key: `v1=` and the HMAC-SHA256 of the message, cut to 16 bytes, in
    /// base64url (the guide's "Signed messages" gives the exact form).
    pub const SIGNATURE: &str = "Cohort-Signature";
}

/// Content type of a successful body.
pub(crate) const JSON: &str = "application/json";
/// Content type of an error body.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// The metadata of a message: every field maps to one header of [`header`]. A broker moves it
/// between the wire and Cohort with [`Metadata::headers`] and [`Metadata::from_headers`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub(crate) message_id: Option<String>,
    pub(crate) traceparent: Option<String>,
    pub(crate) principal: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) session: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub(crate) deadline: Option<u64>,
    pub(crate) instance: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) status: Option<u16>,
    pub(crate) session_set: Option<String>,
    pub(crate) session_clear: bool,
    pub(crate) error: Option<String>,
    pub(crate) idempotency_key: Option<String>,
}

impl Metadata {
    /// Every header that is set, as (name, value) pairs, in a fixed order.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::with_capacity(8);
        self.clone()
            .into_headers(|name, value| headers.push((name, value)));
        headers
    }

    /// Hands every header that is set to `put`, moving the strings instead of copying them: every
    /// command and reply goes through here.
    pub fn into_headers(self, mut put: impl FnMut(&'static str, String)) {
        // Exhaustive, so that a new field cannot be forgotten here.
        let Metadata {
            message_id,
            traceparent,
            principal,
            tenant,
            session,
            deadline,
            instance,
            service,
            content_type,
            status,
            session_set,
            session_clear,
            error,
            idempotency_key,
        } = self;
        // One call a field, not an array of them to loop over: that array is moved around whole.
        let mut put_some = |name, value: Option<String>| {
            if let Some(value) = value {
                put(name, value);
            }
        };
        put_some(header::MESSAGE_ID, message_id);
        put_some(header::TRACEPARENT, traceparent);
        put_some(header::PRINCIPAL, principal);
        put_some(header::TENANT, tenant);
        put_some(header::SESSION, session);
        put_some(header::DEADLINE, deadline.map(decimal));
        put_some(header::INSTANCE, instance);
        put_some(header::SERVICE, service);
        put_some(header::CONTENT_TYPE, content_type);
        put_some(header::STATUS, status.map(decimal));
        put_some(header::SESSION_SET, session_set);
        put_some(header::SESSION_CLEAR, session_clear.then(|| "1".to_owned()));
        put_some(header::ERROR, error);
        put_some(header::IDEMPOTENCY_KEY, idempotency_key);
    }

    /// Reads one header. Unknown names are ignored, so newer senders can add headers freely;
    /// a number that does not parse is dropped rather than trusted.
    pub fn set_header(&mut self, name: &str, value: &str) {
        let text = match name {
            header::DEADLINE => return self.deadline = value.parse().ok(),
            header::STATUS => return self.status = value.parse().ok(),
            header::SESSION_CLEAR => return self.session_clear = value == "1",
            header::MESSAGE_ID => &mut self.message_id,
            header::TRACEPARENT => &mut self.traceparent,
            header::PRINCIPAL => &mut self.principal,
            header::TENANT => &mut self.tenant,
            header::SESSION => &mut self.session,
            header::INSTANCE => &mut self.instance,
            header::SERVICE => &mut self.service,
            header::CONTENT_TYPE => &mut self.content_type,
            header::SESSION_SET => &mut self.session_set,
            header::ERROR => &mut self.error,
            header::IDEMPOTENCY_KEY => &mut self.idempotency_key,
            _ => return,
        };
        *text = Some(value.to_owned());
    }

    /// The value of the header `name`, if it is set.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find_map(|(header, value)| (header == name).then_some(value))
    }

    /// Builds metadata from (name, value) pairs.
    pub fn from_headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut meta = Metadata::default();
        for (name, value) in pairs {
            meta.set_header(name, value);
        }
        meta
    }

    /// The id of an event (`Cohort-Message-Id`), which a broker may use to drop duplicates.
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// Time left until the deadline; `None` without one, zero once it has passed.
    pub(crate) fn time_left(&self) -> Option<Duration> {
        self.deadline.map(|deadline| {
            Duration::from_millis(deadline.saturating_sub(unix_millis(SystemTime::now())))
        })
    }

    /// The 32-hex-digit trace id of the `traceparent`, if it has one.
    pub(crate) fn trace_id(&self) -> Option<&str> {
        self.traceparent.as_deref().and_then(trace_id_of)
    }
}

/// A command, reply or event: metadata plus the JSON body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Everything but the body, carried in headers. Boxed: a message is moved from layer to layer
    /// on its way, and its metadata is most of its size.
    pub meta: Box<Metadata>,
    /// The JSON body.
    pub payload: Bytes,
}

impl Message {
    /// A message with a body and empty metadata.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Message {
            meta: Box::default(),
            payload: payload.into(),
        }
    }

    /// The status of a reply; a reply without one is a success.
    pub fn status(&self) -> u16 {
        self.meta.status.unwrap_or(200)
    }
}

/// A number as header text (itoa: no formatter machinery on the hot path).
fn decimal(n: impl itoa::Integer) -> String {
    itoa::Buffer::new().format(n).to_owned()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Metadata with every field set, for tests of the wire forms.
    pub(crate) fn every_field_set() -> Metadata {
        Metadata {
            message_id: Some("m1".into()),
            traceparent: Some(new_traceparent()),
            principal: Some("alice".into()),
            tenant: Some("acme".into()),
            session: Some("s1".into()),
            deadline: Some(1_700_000_000_000),
            instance: Some("i1".into()),
            service: Some("orders".into()),
            content_type: Some(PROBLEM_JSON.into()),
            status: Some(201),
            session_set: Some("s2".into()),
            session_clear: true,
            error: Some("boom".into()),
            idempotency_key: Some("k1".into()),
        }
    }

    #[test]
    fn metadata_round_trips_through_headers() {
        let meta = every_field_set();
        let headers = meta.headers();
        let back = Metadata::from_headers(headers.iter().map(|(n, v)| (*n, v.as_str())));
        assert_eq!(back, meta);
    }

    #[test]
    fn passed_deadline_leaves_no_time() {
        let meta = Metadata {
            deadline: Some(1),
            ..Metadata::default()
        };
        assert_eq!(meta.time_left(), Some(Duration::ZERO));
    }
}
