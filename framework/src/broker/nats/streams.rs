//! Events in: the events and dead-letter streams, made when missing, and publishing into them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::connection::State;
use async_nats::jetstream::context::{PublishError as JetStreamPublishError, PublishErrorKind};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use bytes::Bytes;
use tokio::time::timeout;

use super::Inner;
use super::wire::event_headers;
use crate::broker::spi::Message;
use crate::config::StreamStorage;
use crate::error::{Error, ErrorKind};

/// How long a publish waits for JetStream to confirm it before sending the event again. A stream
/// whose leader died with the event in hand confirms nothing; its new leader, or the old one once
/// the connection is back, drops a second copy by the event's id (`Nats-Msg-Id`).
const ACK_WAIT: Duration = Duration::from_secs(1);
/// Sends of one event before a publish gives up: an event of a unit of work then waits in the
/// outbox for the relay, rather than holding up the command that emitted it.
const SENDS: u32 = 2;

/// Publishes an event and waits until it is stored: see
/// [`Broker::publish`](crate::broker::spi::Broker::publish).
///
/// An event that JetStream did not confirm within [`ACK_WAIT`], or whose connection was replaced
/// meanwhile, is sent again with the same id, [`SENDS`] times in all. One that no stream takes
/// fails at once: its stream is missing (made again in the background) or, in a cluster, between
/// two leaders, which takes seconds that a command should not wait.
pub(super) async fn publish(inner: &Arc<Inner>, subject: &str, msg: Message) -> Result<(), Error> {
    if inner.client.connection_state() == State::Disconnected {
        return Err(inner.not_connected(&format!("publish to `{subject}`")));
    }
    // Made again for a second send rather than cloned for every first one: a header map clones
    // each name and value apart.
    let signed_headers = || {
        let mut headers = event_headers(&msg.meta);
        inner.signer.sign(subject, &mut headers, &msg.payload);
        headers
    };
    let mut sent = 0;
    loop {
        sent += 1;
        let err = match inner
            .store(subject, signed_headers(), msg.payload.clone())
            .await
        {
            Ok(()) => return Ok(()),
            Err(Unconfirmed::Silent(_)) if sent < SENDS => continue,
            Err(err) => err,
        };
        return Err(match err {
            Unconfirmed::Refused(err) if err.kind() == PublishErrorKind::StreamNotFound => {
                ensure_streams_behind(inner);
                Error::broker_unavailable(format!(
                    "cannot publish to `{subject}`: no JetStream stream takes it now (events go \
                     to `{}`; in a cluster, its stream may be electing a leader)",
                    inner.subjects.all_events()
                ))
            }
            Unconfirmed::Refused(err) if err.kind() == PublishErrorKind::MaxPayloadExceeded => {
                Error::new(
                    ErrorKind::PayloadTooLarge,
                    format!(
                        "the event for `{subject}` is larger than the NATS server accepts: {err}"
                    ),
                )
            }
            Unconfirmed::Refused(err) => Error::broker_unavailable(format!(
                "cannot publish to `{subject}`: JetStream did not confirm storing it: {err}"
            )),
            Unconfirmed::Silent(why) => Error::broker_unavailable(format!(
                "cannot publish to `{subject}`: JetStream did not confirm storing it, sent \
                 {sent} times: {why}"
            )),
        });
    }
}

/// Makes the streams again unless they exist, on a task of its own, unless that is under way:
/// the server lost its store, or someone deleted them.
fn ensure_streams_behind(inner: &Arc<Inner>) {
    if inner.ensuring_streams.swap(true, Ordering::AcqRel) {
        return;
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        if let Err(err) = inner.ensure_streams().await {
            tracing::debug!(error = %err, "could not make sure the event streams exist");
        }
        inner.ensuring_streams.store(false, Ordering::Release);
    });
}

/// Why JetStream did not confirm a publish.
enum Unconfirmed {
    /// It answered with an error, or could not be sent to.
    Refused(JetStreamPublishError),
    /// No answer came: none within [`ACK_WAIT`], or the connection it would come on was replaced.
    Silent(&'static str),
}

impl Inner {
    /// Creates the events and dead-letter streams unless they exist. Instances starting together
    /// may race; whichever creates a stream first wins, the others find it.
    pub(super) async fn ensure_streams(&self) -> Result<(), Error> {
        let events = self.subjects.events_stream();
        self.ensure_stream(&events, self.subjects.all_events(), "Cohort events")
            .await?;
        let dead_letters = self.subjects.dead_letter_stream();
        self.ensure_stream(
            &dead_letters,
            self.subjects.all_dead_letters(),
            "Cohort dead letters",
        )
        .await
    }

    async fn ensure_stream(
        &self,
        name: &str,
        subject: String,
        description: &str,
    ) -> Result<(), Error> {
        let config = stream::Config {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            subjects: vec![subject],
            storage: match self.streams.storage {
                StreamStorage::File => StorageType::File,
                StreamStorage::Memory => StorageType::Memory,
            },
            duplicate_window: self.streams.duplicate_window,
            retention: RetentionPolicy::Limits,
            max_age: self.streams.max_age,
            num_replicas: self.streams.replicas,
            ..Default::default()
        };
        match self.jetstream.get_or_create_stream(config).await {
            Ok(_) => Ok(()),
            // Another instance created it between our lookup and our create.
            Err(err) => match self.jetstream.get_stream(name).await {
                Ok(_) => Ok(()),
                Err(_) => Err(Error::unavailable(format!(
                    "cannot create the JetStream stream `{name}` on NATS at `{}`: {err}; is JetStream enabled (nats-server -js)?",
                    self.urls
                ))),
            },
        }
    }

    /// Publishes to JetStream and waits until the server has stored the message, at most
    /// [`ACK_WAIT`] and only while the connection it was sent on lasts.
    async fn store(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), Unconfirmed> {
        let mut connections = self.connections.clone();
        connections.borrow_and_update();
        let ack = self
            .jetstream
            .publish_with_headers(subject.to_owned(), headers, payload)
            .await
            .map_err(Unconfirmed::Refused)?;
        tokio::select! {
            acked = timeout(ACK_WAIT, ack) => match acked {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) if err.kind() == PublishErrorKind::TimedOut => {
                    Err(Unconfirmed::Silent("no answer"))
                }
                Ok(Err(err)) => Err(Unconfirmed::Refused(err)),
                Err(_) => Err(Unconfirmed::Silent("no answer")),
            },
            _ = connections.changed() => Err(Unconfirmed::Silent("the connection was replaced")),
        }
    }
}
