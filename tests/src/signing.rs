//! Signing by hand, as the guide's "Signed messages" describes it, for tests that talk to the
//! instances over NATS without Cohort's code.

use async_nats::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

/// The signature of a message, by the steps of the guide ("Signed messages"), written out here
/// apart from Cohort's own code: the subject, a line per signed header sorted by name, a blank
/// line, the body; HMAC-SHA256 with the key's text; `v1=` and its first 16 bytes in unpadded
/// base64url.
pub fn sign_by_hand(key: &str, subject: &str, headers: &[(&str, &str)], body: &[u8]) -> String {
    let mut signed: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(name, _)| {
            (name.starts_with("Cohort-") && *name != "Cohort-Signature") || *name == "traceparent"
        })
        .map(|(name, value)| (*name, value.trim()))
        .collect();
    signed.sort_by_key(|(name, _)| *name);
    let mut canonical = format!("{subject}\n").into_bytes();
    for (name, value) in signed {
        canonical.extend_from_slice(format!("{name}:{value}\n").as_bytes());
    }
    canonical.push(b'\n');
    canonical.extend_from_slice(body);
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes()),
        &canonical,
    );
    format!("v1={}", URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16]))
}

/// The headers `pairs`, signed with `key` for `subject` and `body` (no signature without a key).
pub fn headers(key: Option<&str>, subject: &str, pairs: &[(&str, &str)], body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.insert(*name, *value);
    }
    if let Some(key) = key {
        headers.insert("Cohort-Signature", sign_by_hand(key, subject, pairs, body));
    }
    headers
}
