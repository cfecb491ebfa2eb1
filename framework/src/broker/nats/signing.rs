//! Signed cluster messages: with a cluster key, every command, reply, progress message and event
//! carries `Cohort-Signature: v1=<tag>`, where the tag is the HMAC-SHA256 under the key of the
//! message's canonical form, cut to its first 16 bytes (128 bits, as RFC 2104 allows) and written
//! in unpadded base64url (22 characters):
//!
//! ```text
//! {subject}\n
//! {name}:{value}\n        one line per signed header value, sorted by name (bytewise),
//! ...                     the values of one name in the order they were sent
//! \n
//! {body}
//! ```
//!
//! The signed headers are every `Cohort-*` header but `Cohort-Signature`, and `traceparent`; names
//! as sent (case matters), values with leading and trailing white space removed, as NATS servers
//! and clients deliver them. A client in any language can reproduce it (the guide shows how).
//!
//! Every message pays for this on the connection's one reading task, so the form is hashed
//! without allocating and the tag is short: a header value is checked character by character.

use std::fmt;
use std::sync::Arc;

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use subtle::ConstantTimeEq;

use crate::cluster_key::ClusterKey;
use crate::message::header;

/// The code of the error of a message refused for its signature.
pub(crate) const BAD_SIGNATURE: &str = "bad_signature";

/// The prefix of the signature header's value: the version of the canonical form.
const VERSION: &str = "v1=";
/// Signed header values a message may carry: more is refused, so that the sorting needs no
/// allocation (Cohort itself sends at most fourteen).
const MAX_SIGNED_VALUES: usize = 32;
/// The bytes of the HMAC-SHA256 a signature keeps.
const TAG_LEN: usize = 16;
/// A signature's tag in unpadded base64url.
type Encoded = [u8; 22];
/// The canonical form's bytes gathered before they go to the HMAC: ring's `update` costs about
/// as much per call as it does per 100 bytes, and a message has a dozen small pieces.
const GATHERED: usize = 512;

/// Signs and checks this instance's NATS messages; signs nothing and accepts everything without a
/// cluster key. Clones share the keys.
#[derive(Clone, Default)]
pub(crate) struct Signer(Option<Arc<Keys>>);

struct Keys {
    /// Signs, and is accepted.
    current: hmac::Key,
    /// Accepted, never used to sign: the key being rotated out (or in).
    previous: Option<hmac::Key>,
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// It has no `Cohort-Signature`.
    Unsigned,
    /// Its `Cohort-Signature` is not `v1=` and 22 characters.
    Malformed,
    /// More than [`MAX_SIGNED_VALUES`] signed header values.
    TooManyHeaders,
    /// The signature is not the one of any accepted key: forged, tampered with, or signed with a
    /// key this instance does not have.
    Mismatch,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rejection::Unsigned => "it is not signed (no Cohort-Signature header)",
            Rejection::Malformed => "its Cohort-Signature is not `v1=` and 22 characters",
            Rejection::TooManyHeaders => "it carries more than 32 signed header values",
            Rejection::Mismatch => {
                "its signature does not match: it was forged or changed on the way, or signed with \
                 a key this instance does not accept (check COHORT_CLUSTER_KEY on every instance)"
            }
        })
    }
}

impl Signer {
    /// Signs with `current` and accepts `current` and `previous`.
    pub(crate) fn new(current: &ClusterKey, previous: Option<&ClusterKey>) -> Signer {
        let key = |key: &ClusterKey| hmac::Key::new(hmac::HMAC_SHA256, key.expose().as_bytes());
        Signer(Some(Arc::new(Keys {
            current: key(current),
            previous: previous.map(key),
        })))
    }

    /// Adds the signature of the message (`subject`, `headers`, `body`) to its headers; nothing
    /// without a key.
    pub(crate) fn sign(&self, subject: &str, headers: &mut HeaderMap, body: &[u8]) {
        let Some(keys) = &self.0 else { return };
        let Ok(tag) = encoded_tag(&keys.current, subject, headers, body) else {
            // Only a message with more signed headers than Cohort ever sends gets here; unsigned,
            // the receiver refuses it and says why.
            tracing::error!(%subject, "a message with too many Cohort headers was not signed");
            return;
        };
        headers.insert(SIGNATURE, signature_value(&tag));
    }

    /// Whether the message carries the signature of an accepted key; always without a key.
    pub(crate) fn verify(
        &self,
        subject: &str,
        headers: Option<&HeaderMap>,
        body: &[u8],
    ) -> Result<(), Rejection> {
        let Some(keys) = &self.0 else { return Ok(()) };
        let Some(headers) = headers else {
            return Err(Rejection::Unsigned);
        };
        let claimed = match headers.get(SIGNATURE) {
            Some(value) => claimed_tag(value.as_str())?,
            None => return Err(Rejection::Unsigned),
        };
        // The claimed tag is compared as text: decoding it would cost more than encoding ours.
        let matches = |key: &hmac::Key| -> Result<bool, Rejection> {
            let tag = encoded_tag(key, subject, headers, body)?;
            Ok(bool::from(tag.as_slice().ct_eq(claimed)))
        };
        if matches(&keys.current)? {
            return Ok(());
        }
        match &keys.previous {
            Some(previous) if matches(previous)? => Ok(()),
            _ => Err(Rejection::Mismatch),
        }
    }
}

const SIGNATURE: HeaderName = HeaderName::from_static(header::SIGNATURE);

/// Logs a refused `what` (a command, a reply, an event...): its subject, the instance it claims to
/// come from and why; never its body or session.
pub(crate) fn warn_refused(
    what: &str,
    subject: &str,
    headers: Option<&HeaderMap>,
    rejection: Rejection,
) {
    let sender = headers
        .and_then(|headers| headers.get(header::INSTANCE))
        .map_or("", HeaderValue::as_str);
    tracing::warn!(%subject, sender, reason = %rejection, "refused {what}");
}

/// The signature's tag under `key` of the message, in base64url.
fn encoded_tag(
    key: &hmac::Key,
    subject: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Encoded, Rejection> {
    let tag = tag(key, subject, headers, body)?;
    let mut encoded = Encoded::default();
    let written = URL_SAFE_NO_PAD.encode_slice(&tag.as_ref()[..TAG_LEN], &mut encoded);
    debug_assert_eq!(written, Ok(encoded.len()));
    Ok(encoded)
}

/// The HMAC under `key` of the canonical form of the message.
fn tag(
    key: &hmac::Key,
    subject: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<hmac::Tag, Rejection> {
    let mut signed = [("", ""); MAX_SIGNED_VALUES];
    let mut count = 0;
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        if !is_signed(name) {
            continue;
        }
        for value in values {
            let slot = signed.get_mut(count).ok_or(Rejection::TooManyHeaders)?;
            *slot = (name, value.as_str().trim());
            count += 1;
        }
    }
    let signed = &mut signed[..count];
    // Stable, and by name only: the values of one name keep the order they were sent in.
    signed.sort_by(|a, b| a.0.cmp(b.0));

    let mut form = Gathering::new(key);
    form.put(subject.as_bytes());
    form.put(b"\n");
    for (name, value) in signed.iter() {
        form.put(name.as_bytes());
        form.put(b":");
        form.put(value.as_bytes());
        form.put(b"\n");
    }
    form.put(b"\n");
    form.put(body);
    Ok(form.sign())
}

/// An HMAC fed through a buffer of [`GATHERED`] bytes.
struct Gathering {
    context: hmac::Context,
    gathered: [u8; GATHERED],
    len: usize,
}

impl Gathering {
    fn new(key: &hmac::Key) -> Gathering {
        Gathering {
            context: hmac::Context::with_key(key),
            gathered: [0; GATHERED],
            len: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > GATHERED {
            self.flush();
        }
        match self.gathered.get_mut(self.len..self.len + bytes.len()) {
            Some(free) => {
                free.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.context.update(bytes),
        }
    }

    fn flush(&mut self) {
        self.context.update(&self.gathered[..self.len]);
        self.len = 0;
    }

    fn sign(mut self) -> hmac::Tag {
        self.flush();
        self.context.sign()
    }
}

/// Whether the header `name` is covered by the signature.
fn is_signed(name: &str) -> bool {
    (name.starts_with("Cohort-") && name != header::SIGNATURE) || name == header::TRACEPARENT
}

/// `v1=` and the tag.
fn signature_value(tag: &Encoded) -> HeaderValue {
    let mut text = String::with_capacity(VERSION.len() + tag.len());
    text.push_str(VERSION);
    // Base64url is ASCII.
    text.extend(tag.iter().map(|&byte| char::from(byte)));
    HeaderValue::from(text)
}

/// The tag of a `v1=<22 characters>` header value, as sent.
fn claimed_tag(value: &str) -> Result<&[u8], Rejection> {
    value
        .strip_prefix(VERSION)
        .filter(|tag| tag.len() == Encoded::default().len())
        .map(str::as_bytes)
        .ok_or(Rejection::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> ClusterKey {
        ClusterKey::new(text).expect("long enough")
    }

    const KEY_A: &str = "cluster-key-A-0123456789abcdefghij";
    const KEY_B: &str = "cluster-key-B-0123456789abcdefghij";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, *value);
        }
        headers
    }

    /// The worked example of the guide: the same message, key and signature.
    #[test]
    fn the_guide_example_signs_as_documented() {
        let mut message = headers(&[
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("Cohort-Principal", "alice"),
            ("Cohort-Deadline", "1767225600000"),
            ("Nats-Msg-Id", "not signed"),
        ]);
        let subject = "cohort.cmd.inventory.v1.set_stock";
        let body = br#"{"sku":"book","qty":5}"#;
        let canonical = concat!(
            "cohort.cmd.inventory.v1.set_stock\n",
            "Cohort-Deadline:1767225600000\n",
            "Cohort-Principal:alice\n",
            "traceparent:00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\n",
            "\n",
            r#"{"sku":"book","qty":5}"#,
        );
        let by_hand = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, KEY_A.as_bytes()),
            canonical.as_bytes(),
        );
        Signer::new(&key(KEY_A), None).sign(subject, &mut message, body);
        let signature = message.get(header::SIGNATURE).expect("signed");
        let by_hand = format!("v1={}", URL_SAFE_NO_PAD.encode(&by_hand.as_ref()[..16]));
        assert_eq!(signature.as_str(), by_hand);
        assert_eq!(
            signature.as_str(),
            "v1=sLdLw3lQTFuiXXqVFSKWaA",
            "the value the guide's Python snippet prints"
        );
    }

    #[test]
    fn a_signed_message_verifies_and_any_change_is_refused() {
        let signer = Signer::new(&key(KEY_A), None);
        let subject = "cohort.cmd.s.v1.c";
        let mut signed = headers(&[("Cohort-Principal", "alice"), ("Cohort-Tenant", "t")]);
        signer.sign(subject, &mut signed, b"{}");
        assert_eq!(signer.verify(subject, Some(&signed), b"{}"), Ok(()));
        assert_eq!(
            signer.verify("cohort.cmd.s.v1.other", Some(&signed), b"{}"),
            Err(Rejection::Mismatch)
        );
        assert_eq!(
            signer.verify(subject, Some(&signed), b"{\"x\":1}"),
            Err(Rejection::Mismatch)
        );
        let mut tampered = signed.clone();
        tampered.insert("Cohort-Principal", "admin");
        assert_eq!(
            signer.verify(subject, Some(&tampered), b"{}"),
            Err(Rejection::Mismatch)
        );
        let mut added = signed.clone();
        added.insert("Cohort-Session", "stolen");
        assert_eq!(
            signer.verify(subject, Some(&added), b"{}"),
            Err(Rejection::Mismatch)
        );
        let mut unsigned_header = signed.clone();
        unsigned_header.insert("Nats-Msg-Id", "anything");
        assert_eq!(
            signer.verify(subject, Some(&unsigned_header), b"{}"),
            Ok(()),
            "headers outside the signed set may change"
        );
    }

    #[test]
    fn unsigned_and_malformed_signatures_are_refused() {
        let signer = Signer::new(&key(KEY_A), None);
        assert_eq!(signer.verify("s", None, b""), Err(Rejection::Unsigned));
        for bad in [
            "v2=sLdLw3lQTFuiXXqVFSKWaA",
            "v1=xyz",
            "v1=sLdLw3lQTFuiXXqVFSKWaAA",
            &format!("v1={}", "0".repeat(64)),
            &"0".repeat(25),
        ] {
            let message = headers(&[(header::SIGNATURE, bad)]);
            assert_eq!(
                signer.verify("s", Some(&message), b""),
                Err(Rejection::Malformed),
                "{bad}"
            );
        }
        let plain = Signer::default();
        assert_eq!(plain.verify("s", None, b""), Ok(()), "no key: no check");
    }

    #[test]
    fn header_order_and_surrounding_white_space_do_not_matter() {
        let signer = Signer::new(&key(KEY_A), None);
        let mut one = headers(&[("Cohort-Tenant", "t"), ("Cohort-Principal", "alice")]);
        signer.sign("s", &mut one, b"");
        let signature = one.get(header::SIGNATURE).expect("signed").clone();
        let mut other = headers(&[("Cohort-Principal", " alice "), ("Cohort-Tenant", "t")]);
        other.insert(header::SIGNATURE, signature);
        assert_eq!(signer.verify("s", Some(&other), b""), Ok(()));
    }

    #[test]
    fn the_previous_key_is_accepted_but_never_signs() {
        let rotating = Signer::new(&key(KEY_B), Some(&key(KEY_A)));
        let old = Signer::new(&key(KEY_A), None);
        let mut from_old = HeaderMap::new();
        old.sign("s", &mut from_old, b"x");
        assert_eq!(rotating.verify("s", Some(&from_old), b"x"), Ok(()));
        let mut from_rotating = HeaderMap::new();
        rotating.sign("s", &mut from_rotating, b"x");
        assert_eq!(
            old.verify("s", Some(&from_rotating), b"x"),
            Err(Rejection::Mismatch),
            "signed with B, which the old instance does not know"
        );
    }

    #[test]
    fn too_many_signed_values_are_refused() {
        let signer = Signer::new(&key(KEY_A), None);
        let mut message = HeaderMap::new();
        for i in 0..=MAX_SIGNED_VALUES {
            message.append("Cohort-Many", i.to_string());
        }
        message.insert(header::SIGNATURE, format!("v1={}", "0".repeat(22)));
        assert_eq!(
            signer.verify("s", Some(&message), b""),
            Err(Rejection::TooManyHeaders)
        );
    }
}
