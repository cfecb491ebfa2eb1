//! The wire form: Cohort's metadata in NATS headers, as "Wire protocol (NATS)" in the design
//! has it.

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::{HeaderMap, HeaderName, HeaderValue};

use crate::message::Metadata;

/// The last token of a reply subject that asks for progress messages, such as
/// `_INBOX.Ab3dE.7.cohort-progress`: while the command runs, from a second after it first waits
/// and every second after that, the instance running it sends one to the reply subject
/// (`Cohort-Status: 100`, no body), and the reply follows them as usual.
///
/// In the reply subject rather than a header: a command with no metadata travels without a header
/// block, and a header block costs each side about 2,000 instructions (callgrind), a quarter of
/// what the executing instance spends on the whole echo command.
pub(super) const PROGRESS_TOKEN: &str = "cohort-progress";

/// Whether a request with this reply subject asks for progress messages: see [`PROGRESS_TOKEN`].
pub(super) fn asks_for_progress(reply_to: &str) -> bool {
    reply_to
        .strip_suffix(PROGRESS_TOKEN)
        .is_some_and(|rest| rest.ends_with('.'))
}

/// The headers of `meta`.
fn header_map(meta: &Metadata) -> HeaderMap {
    into_header_map(meta.clone())
}

/// The headers of `meta`, as [`Metadata::headers`] lists them, moving its strings instead of
/// copying them: every command and reply goes through here.
pub(super) fn into_header_map(meta: Metadata) -> HeaderMap {
    let mut headers = HeaderMap::new();
    meta.into_headers(|name, value| {
        headers.insert(HeaderName::from_static(name), header_value(value));
    });
    headers
}

/// The headers of an event: its metadata, and its message id again as `Nats-Msg-Id`, so that
/// JetStream drops a second publish of it (a retry) within its duplicate window.
pub(super) fn event_headers(meta: &Metadata) -> HeaderMap {
    let mut headers = header_map(meta);
    if let Some(id) = &meta.message_id {
        headers.insert(NATS_MESSAGE_ID, header_value(id.clone()));
    }
    headers
}

/// A header value; line breaks (which would end the header) become spaces.
pub(super) fn header_value(value: String) -> HeaderValue {
    // A byte scan: `str::contains` with a char set decodes every character first.
    if value.bytes().any(|b| b == b'\r' || b == b'\n') {
        HeaderValue::from(value.replace(['\r', '\n'], " "))
    } else {
        HeaderValue::from(value)
    }
}

/// The metadata carried by `headers`.
pub(super) fn metadata_of(headers: Option<&HeaderMap>) -> Metadata {
    match headers {
        Some(headers) => Metadata::from_headers(headers.iter().flat_map(|(name, values)| {
            let name: &str = name.as_ref();
            values.iter().map(move |value| (name, value.as_str()))
        })),
        None => Metadata::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_headers_are_the_metadata_headers() {
        let meta = crate::message::tests::every_field_set();
        let headers = header_map(&meta);
        let expected = meta.headers();
        assert_eq!(headers.len(), expected.len());
        for (name, value) in expected {
            assert_eq!(
                headers.get(name).map(HeaderValue::as_str),
                Some(value.as_str()),
                "{name}"
            );
        }
    }

    #[test]
    fn metadata_round_trips_through_nats_headers() {
        let meta = Metadata {
            message_id: Some("m1".into()),
            principal: Some("alice".into()),
            deadline: Some(42),
            status: Some(409),
            session_clear: true,
            error: Some("line one\nline two".into()),
            ..Metadata::default()
        };
        let back = metadata_of(Some(&header_map(&meta)));
        assert_eq!(back.error.as_deref(), Some("line one line two"));
        assert_eq!(
            Metadata {
                error: meta.error.clone(),
                ..back
            },
            meta
        );
        assert_eq!(metadata_of(None), Metadata::default());
    }

    #[test]
    fn a_reply_subject_ending_in_the_progress_token_asks_for_progress() {
        assert!(asks_for_progress("_INBOX.Ab3dE.7.cohort-progress"));
        assert!(!asks_for_progress("_INBOX.Ab3dE.7"));
        assert!(!asks_for_progress("_INBOX.Ab3dE.7.not-cohort-progress"));
        assert!(!asks_for_progress("cohort-progress"));
    }
}
