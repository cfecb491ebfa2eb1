//! The broker: how commands reach an instance that runs them, and how events reach subscribers.
//!
//! Two implementations share one contract ([`spi::Broker`], and one conformance suite in
//! `cohort::testing`): [`MemoryBroker`], the embedded default for a single instance, and
//! `NatsBroker` (feature `nats`, on by default), for many.

mod memory;
#[cfg(feature = "nats")]
mod nats;
pub mod spi;
pub mod stats;

use std::time::Duration;

pub use crate::message::Subjects;
pub use memory::MemoryBroker;
#[cfg(feature = "nats")]
pub use nats::{NatsBroker, NatsOptions, StreamSettings};

use crate::error::{Error, ErrorKind};

/// The code of the error a caller gets when the instance running its command is lost.
pub(crate) const EXECUTOR_LOST: &str = "executor_lost";

/// The error of a request that no instance serves.
pub(crate) fn no_responders(subject: &str) -> Error {
    Error::new(
        ErrorKind::NoResponders,
        format!("no instance serves `{subject}`"),
    )
}

/// The error of a request that got no answer within `timeout`; the subject is for the log.
pub(crate) fn timed_out(subject: &str, timeout: Duration) -> Error {
    Error::new(ErrorKind::Timeout, "the command did not answer in time")
        .with_cause(format!("`{subject}` did not answer in {timeout:?}"))
}

/// Whether a NATS subject matches a pattern with `*` (one token) and `>` (the rest).
fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(subject_matches("a.b.c", "a.b.c"));
    }
}
