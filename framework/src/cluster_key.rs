//! The cluster key: the secret the instances of one deployment share to sign the commands, replies
//! and events they send each other over NATS (`COHORT_CLUSTER_KEY`).

use secrecy::{ExposeSecret, SecretString};

use crate::error::Error;
use crate::message::random_hex;

/// The shortest key accepted, in bytes: 256 bits of text, the size of HMAC-SHA256's output.
pub const MIN_CLUSTER_KEY_LEN: usize = 32;

/// A secret shared by every instance of a deployment, at least [`MIN_CLUSTER_KEY_LEN`] bytes of
/// text; the HMAC-SHA256 key is those bytes as they are (UTF-8). Its `Debug` shows no part of it.
///
/// ```
/// let key = cohort::ClusterKey::new("a secret of at least thirty-two bytes!").expect("long enough");
/// assert!(!format!("{key:?}").contains("secret"));
/// assert!(cohort::ClusterKey::new("too short").is_err());
/// ```
#[derive(Clone)]
pub struct ClusterKey(SecretString);

impl ClusterKey {
    /// The key `text`; shorter than [`MIN_CLUSTER_KEY_LEN`] bytes is an error, which does not
    /// repeat the text.
    pub fn new(text: impl Into<String>) -> Result<ClusterKey, Error> {
        let text = text.into();
        if text.len() < MIN_CLUSTER_KEY_LEN {
            return Err(Error::bad_request(format!(
                "a cluster key must be at least {MIN_CLUSTER_KEY_LEN} bytes of text, this one has {}; \
                 generate one with `openssl rand -base64 32`",
                text.len()
            ))
            .with_code("invalid_config"));
        }
        Ok(ClusterKey(SecretString::from(text)))
    }

    /// A new random key (64 hex digits), for tests and tools that start a cluster of their own.
    pub fn random() -> ClusterKey {
        ClusterKey(SecretString::from(random_hex(32)))
    }

    /// The key's text, to hand to an instance (as `COHORT_CLUSTER_KEY`) or to a client that signs
    /// its own calls. Never log it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey([REDACTED])")
    }
}

/// Two keys are equal when their texts are: configurations compare, nothing secret depends on it.
impl PartialEq for ClusterKey {
    fn eq(&self, other: &ClusterKey) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for ClusterKey {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_key_is_refused_without_repeating_it() {
        let err = ClusterKey::new("hunter2-hunter2").expect_err("too short");
        assert!(!err.message().contains("hunter2"), "{err}");
        assert!(err.message().contains("32"), "{err}");
        assert!(ClusterKey::new("x".repeat(MIN_CLUSTER_KEY_LEN)).is_ok());
    }

    #[test]
    fn debug_shows_no_part_of_the_key() {
        let key = ClusterKey::random();
        assert_eq!(key.expose().len(), 64);
        assert!(!format!("{key:?}").contains(&key.expose()[..8]));
        assert_ne!(key, ClusterKey::random());
    }
}
