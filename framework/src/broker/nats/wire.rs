//! The wire form: Cohort's metadata in NATS headers, as "Wire protocol (NATS)" in the design
//! has it.

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::{HeaderMap, HeaderName, HeaderValue};

use crate::message::{Metadata, header};

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
        Some(headers) => Metadata::from_headers(pairs(headers)),
        None => Metadata::default(),
    }
}

/// The metadata carried by the headers of a command, and whether they ask for progress
/// ([`header::PROGRESS`]), read in the same pass.
pub(super) fn command_metadata_of(headers: Option<&HeaderMap>) -> (Metadata, bool) {
    let Some(headers) = headers else {
        return (Metadata::default(), false);
    };
    let mut progress = false;
    let meta = Metadata::from_headers(pairs(headers).filter(|&(name, value)| {
        let asks = name == header::PROGRESS;
        progress |= asks && value == "1";
        !asks
    }));
    (meta, progress)
}

/// Every (name, value) of `headers`.
fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers.iter().flat_map(|(name, values)| {
        let name: &str = name.as_ref();
        values.iter().map(move |value| (name, value.as_str()))
    })
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
    fn a_command_asks_for_progress_with_its_header() {
        let meta = Metadata {
            principal: Some("alice".into()),
            ..Metadata::default()
        };
        let mut headers = header_map(&meta);
        assert_eq!(command_metadata_of(Some(&headers)), (meta.clone(), false));
        headers.insert(header::PROGRESS, "1");
        assert_eq!(command_metadata_of(Some(&headers)), (meta.clone(), true));
        headers.insert(header::PROGRESS, "0");
        assert_eq!(command_metadata_of(Some(&headers)), (meta, false));
        assert_eq!(command_metadata_of(None), (Metadata::default(), false));
    }
}
