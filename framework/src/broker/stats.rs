//! What an instance tells about its work, whichever broker carries it: the counts of each command
//! it serves, and the backlog of each subscription. The NATS broker announces the counts with the
//! micro protocol (`$SRV.STATS`) and gathers every instance's; the dashboard shows them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::message::Message;

/// What one command has served on one instance, counted with atomics: cheap on every request.
#[derive(Debug, Default)]
pub struct EndpointStats {
    requests: AtomicU64,
    errors: AtomicU64,
    nanos: AtomicU64,
    /// The status and message of the last error reply.
    last_error: Mutex<Option<(u16, String)>>,
}

impl EndpointStats {
    /// Counts one answered request; a reply with an error status counts as an error.
    pub fn record(&self, reply: &Message, took: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        if reply.status() >= 400 {
            self.errors.fetch_add(1, Ordering::Relaxed);
            let err = Error::from_problem_json(reply.status(), &reply.payload);
            let last = (reply.status(), err.message().to_owned());
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(last);
        }
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Counts {
        let requests = self.requests.load(Ordering::Relaxed);
        let nanos = self.nanos.load(Ordering::Relaxed);
        Counts {
            requests,
            errors: self.errors.load(Ordering::Relaxed),
            processing_nanos: nanos,
            average_nanos: nanos.checked_div(requests).unwrap_or(0),
            last_error: self
                .last_error()
                .map(|(status, message)| format!("{status}:{message}")),
        }
    }

    /// The status and message of the last error reply.
    pub(crate) fn last_error(&self) -> Option<(u16, String)> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What one command has served on one instance since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Counts {
    /// Requests answered.
    pub requests: u64,
    /// Of those, answered with an error status.
    pub errors: u64,
    /// Time spent answering them, in total.
    pub processing_nanos: u64,
    /// Time spent answering one, on average.
    pub average_nanos: u64,
    /// The last error, as `{status}:{message}`.
    pub last_error: Option<String>,
}

/// One command as one instance reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CommandStats {
    /// The instance that serves it.
    pub instance: String,
    /// `{prefix}.cmd.{service}.v{version}.{name}`
    pub subject: String,
    /// What it has served there.
    #[serde(flatten)]
    pub counts: Counts,
}

impl CommandStats {
    /// The report of `subject` on `instance`.
    pub fn new(instance: &str, subject: &str, counts: Counts) -> CommandStats {
        CommandStats {
            instance: instance.to_owned(),
            subject: subject.to_owned(),
            counts,
        }
    }
}

/// The backlog of one subscription's consumer, as the broker sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SubscriptionStats {
    /// Events not yet delivered to any instance.
    pub pending: u64,
    /// Events delivered and not yet acknowledged (being handled, or waiting for a redelivery).
    pub in_flight: u64,
    /// Events delivered more than once so far, among those not yet acknowledged.
    pub redelivered: u64,
    /// Events that spent their attempts and went to the dead letters.
    pub dead_letters: u64,
}
