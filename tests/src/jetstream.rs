//! What the events stream holds, read from JetStream itself: the events as stored, whether a
//! consumer has events out for delivery or unacknowledged, and how many were dead-lettered.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{self, stream::Stream};
use cohort::testing::{eventually, eventually_ok};

/// The stream of every event, with the default subject prefix.
const EVENTS: &str = "COHORT_EVENTS";
/// The stream of every dead letter.
const DEAD_LETTERS: &str = "COHORT_DLQ";

/// The event streams of one NATS server.
pub struct EventStreams {
    jetstream: jetstream::Context,
}

/// Where a subscription's durable consumer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Events not yet delivered.
    pub pending: u64,
    /// Events delivered and not yet acknowledged: held by an instance, or by one that died.
    pub ack_pending: usize,
    /// Events delivered more than once.
    pub redelivered: usize,
}

impl Progress {
    /// Every event delivered and acknowledged.
    pub fn drained(&self) -> bool {
        self.pending == 0 && self.ack_pending == 0
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} pending, {} unacknowledged, {} redelivered",
            self.pending, self.ack_pending, self.redelivered
        )
    }
}

impl EventStreams {
    /// Connects to the NATS server at `url` (comma-separated URLs for a cluster).
    pub async fn connect(url: &str) -> EventStreams {
        let client = async_nats::connect(url.split(',').collect::<Vec<_>>())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to NATS at {url}: {e}"));
        EventStreams {
            jetstream: jetstream::new(client),
        }
    }

    /// Where the durable consumer `consumer` (`{service}__{subscription}`) stands.
    pub async fn progress(&self, consumer: &str) -> Result<Progress, String> {
        let info = self
            .stream(EVENTS)
            .await?
            .consumer_info(consumer)
            .await
            .map_err(|e| format!("no info on consumer {consumer}: {e}"))?;
        Ok(Progress {
            pending: info.num_pending,
            ack_pending: info.num_ack_pending,
            redelivered: info.num_redelivered,
        })
    }

    /// How many events were dead-lettered (0 before the first).
    pub async fn dead_letters(&self) -> Result<u64, String> {
        let mut stream = self.stream(DEAD_LETTERS).await?;
        let info = stream
            .info()
            .await
            .map_err(|e| format!("no info on stream {DEAD_LETTERS}: {e}"))?;
        Ok(info.state.messages)
    }

    /// Waits (at most 2 s) until `consumer` has events delivered and not yet acknowledged: what
    /// an instance holds while it handles them, and loses if it dies.
    pub async fn wait_until_held(&self, consumer: &str) {
        let held = format!("an instance must hold unacknowledged events of {consumer}");
        eventually(&held, Duration::from_secs(2), async || {
            self.progress(consumer)
                .await
                .is_ok_and(|progress| progress.ack_pending > 0)
        })
        .await;
    }

    /// The last event stored on `subject`, waiting (at most 10 s) until there is one.
    pub async fn last_event(&self, subject: &str) -> StreamMessage {
        let what = format!("an event must be stored on {subject}");
        eventually_ok(&what, Duration::from_secs(10), async || {
            let stream = self.stream(EVENTS).await?;
            stream
                .get_last_raw_message_by_subject(subject)
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    async fn stream(&self, name: &str) -> Result<Stream, String> {
        self.jetstream
            .get_stream(name)
            .await
            .map_err(|e| format!("no stream {name}: {e}"))
    }
}
