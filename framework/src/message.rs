//! The envelope every command, reply and event travels in, and its wire form.
//!
//! The body is the payload's JSON itself; everything else rides in headers, so that a plain NATS
//! client in any language can call a command or read an event without Cohort's code.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

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
    /// The HTTP-like status of a reply.
    pub const STATUS: &str = "Cohort-Status";
    /// On a reply: the session id the HTTP layer must now send as its cookie.
    pub const SESSION_SET: &str = "Cohort-Session-Set";
    /// On a reply: the session was destroyed; the HTTP layer clears its cookie.
    pub const SESSION_CLEAR: &str = "Cohort-Session-Clear";
    /// On a dead-lettered event: the last error.
    pub const ERROR: &str = "Cohort-Error";
}

/// Content type of a successful body.
pub const JSON: &str = "application/json";
/// Content type of an error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The metadata of a message. Every field maps to one header of [`header`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub message_id: Option<String>,
    pub traceparent: Option<String>,
    pub principal: Option<String>,
    pub tenant: Option<String>,
    pub session: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub deadline: Option<u64>,
    pub instance: Option<String>,
    pub service: Option<String>,
    pub content_type: Option<String>,
    pub status: Option<u16>,
    pub session_set: Option<String>,
    pub session_clear: bool,
    pub error: Option<String>,
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
            _ => return,
        };
        *text = Some(value.to_owned());
    }

    /// Builds metadata from (name, value) pairs.
    pub fn from_headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut meta = Metadata::default();
        for (name, value) in pairs {
            meta.set_header(name, value);
        }
        meta
    }

    /// Time left until the deadline; `None` without one, zero once it has passed.
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline.map(|deadline| {
            Duration::from_millis(deadline.saturating_sub(unix_millis(SystemTime::now())))
        })
    }

    /// The 32-hex-digit trace id of the `traceparent`, if it has one.
    pub fn trace_id(&self) -> Option<&str> {
        self.traceparent.as_deref().and_then(trace_id_of)
    }
}

/// A command, reply or event: metadata plus the JSON body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub meta: Metadata,
    pub payload: Bytes,
}

impl Message {
    /// A message with a body and empty metadata.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Message {
            meta: Metadata::default(),
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
pub fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The subjects and names of the wire protocol under one prefix (default `cohort`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: impl Into<String>) -> Self {
        Subjects {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}.cmd.{service}.v{version}.{command}`
    pub fn command(&self, service: &str, version: u32, command: &str) -> String {
        format!("{}.cmd.{service}.v{version}.{command}", self.prefix)
    }

    /// `{prefix}.{service}.v{version}.{command}`: the queue group all instances share.
    pub fn queue_group(&self, service: &str, version: u32, command: &str) -> String {
        format!("{}.{service}.v{version}.{command}", self.prefix)
    }

    /// `{prefix}.evt.{service}.{event}`: where `service` publishes `event`.
    pub fn event(&self, service: &str, event: &str) -> String {
        format!("{}.evt.{service}.{event}", self.prefix)
    }

    /// `{prefix}.evt.*.{event}`: the event from any service.
    pub fn event_filter(&self, event: &str) -> String {
        format!("{}.evt.*.{event}", self.prefix)
    }

    /// `{prefix}.evt.>`: everything the events stream captures.
    pub fn all_events(&self) -> String {
        format!("{}.evt.>", self.prefix)
    }

    /// `{prefix}.dlq.{service}.{subscription}`
    pub fn dead_letter(&self, service: &str, subscription: &str) -> String {
        format!("{}.dlq.{service}.{subscription}", self.prefix)
    }

    /// `{prefix}.dlq.>`
    pub fn all_dead_letters(&self) -> String {
        format!("{}.dlq.>", self.prefix)
    }

    /// `{PREFIX}_EVENTS`: the JetStream stream of events.
    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.stream_base())
    }

    /// `{PREFIX}_DLQ`: the JetStream stream of dead letters.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DLQ", self.stream_base())
    }

    /// Stream names may not contain `.`, `*`, `>` or spaces.
    fn stream_base(&self) -> String {
        self.prefix
            .chars()
            .map(|c| match c {
                '.' | '*' | '>' | ' ' | '-' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect()
    }

    /// `{service}__{subscription}`: the durable consumer all instances share.
    pub fn durable(service: &str, subscription: &str) -> String {
        format!("{service}__{subscription}")
    }
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects::new("cohort")
    }
}

/// Random bytes as lowercase hex: ids for messages, sessions, traces and instances.
///
/// The generator is rand's thread-local one: a CSPRNG seeded from the OS and reseeded
/// periodically, so it is fit for session ids, without a system call per id on the hot path.
pub fn random_hex(bytes: usize) -> String {
    let mut out = vec![0u8; bytes * 2];
    let mut random = [0u8; 32];
    for hex in out.chunks_mut(2 * random.len()) {
        let random = &mut random[..hex.len() / 2];
        rand::Rng::fill_bytes(&mut rand::rng(), random);
        write_hex(hex, random);
    }
    ascii_string(out)
}

/// Writes `bytes` in lowercase hex into `out` (twice their length): byte by byte into a buffer,
/// where pushing characters onto a `String` would encode each one as UTF-8 first.
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// Text built from ASCII bytes.
fn ascii_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("hex digits and dashes are ASCII")
}

/// A fresh W3C `traceparent` with a new trace id.
pub fn new_traceparent() -> String {
    child_traceparent(None)
}

/// A `traceparent` for a child span of `parent`'s trace (or a new trace when it has none):
/// `00-{trace id: 32 hex}-{span id: 16 hex}-01`, built in one buffer, as every command starts one.
pub fn child_traceparent(parent: Option<&str>) -> String {
    let mut random = [0u8; 24];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut random);
    let mut out = *b"00-................................-................-01";
    match parent.and_then(trace_id_of) {
        Some(trace_id) => out[3..35].copy_from_slice(trace_id.as_bytes()),
        None => write_hex(&mut out[3..35], &random[..16]),
    }
    write_hex(&mut out[36..52], &random[16..]);
    ascii_string(out.to_vec())
}

/// The trace id of a W3C `traceparent`, if it has a valid one.
pub(crate) fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, trace_id) = (parts.next()?, parts.next()?);
    (trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace_id)
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
    fn subjects_follow_the_wire_protocol() {
        let s = Subjects::new("shop.prod");
        assert_eq!(
            s.command("orders", 1, "place"),
            "shop.prod.cmd.orders.v1.place"
        );
        assert_eq!(
            s.queue_group("orders", 1, "place"),
            "shop.prod.orders.v1.place"
        );
        assert_eq!(
            s.event("orders", "order_placed"),
            "shop.prod.evt.orders.order_placed"
        );
        assert_eq!(
            s.event_filter("order_placed"),
            "shop.prod.evt.*.order_placed"
        );
        assert_eq!(s.events_stream(), "SHOP_PROD_EVENTS");
        assert_eq!(Subjects::durable("audit", "count"), "audit__count");
    }

    #[test]
    fn child_trace_keeps_the_trace_id() {
        let parent = new_traceparent();
        let child = child_traceparent(Some(&parent));
        assert_eq!(trace_id_of(&parent), trace_id_of(&child));
        assert_ne!(parent, child);
    }

    #[test]
    fn a_traceparent_is_version_trace_span_and_flags_in_hex() {
        let traceparent = new_traceparent();
        let parts: Vec<&str> = traceparent.split('-').collect();
        let lengths: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        assert_eq!(lengths, [2, 32, 16, 2]);
        assert_eq!((parts[0], parts[3]), ("00", "01"));
        let hex = |p: &&str| p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        assert!(parts.iter().all(hex), "{parts:?}");
    }

    #[test]
    fn random_hex_has_two_digits_a_byte_at_any_length() {
        for bytes in [0, 1, 4, 32, 33, 100] {
            let id = random_hex(bytes);
            assert_eq!(id.len(), 2 * bytes);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
        assert_ne!(
            random_hex(40)[64..],
            random_hex(40)[64..],
            "the tail is random too"
        );
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
