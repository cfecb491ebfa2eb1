//! Events in: the events and dead-letter streams, made when missing, and publishing into them.

use async_nats::HeaderMap;
use async_nats::connection::State;
use async_nats::jetstream::context::{PublishError as JetStreamPublishError, PublishErrorKind};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use bytes::Bytes;

use super::Inner;
use super::wire::event_headers;
use crate::broker::spi::Message;
use crate::config::StreamStorage;
use crate::error::{Error, ErrorKind};

/// Publishes an event and waits until it is stored: see
/// [`Broker::publish`](crate::broker::spi::Broker::publish).
pub(super) async fn publish(inner: &Inner, subject: &str, msg: Message) -> Result<(), Error> {
    if inner.client.connection_state() == State::Disconnected {
        return Err(inner.not_connected(&format!("publish to `{subject}`")));
    }
    let mut headers = event_headers(&msg.meta);
    inner.signer.sign(subject, &mut headers, &msg.payload);
    let mut retried = false;
    loop {
        return match inner
            .store(subject, headers.clone(), msg.payload.clone())
            .await
        {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == PublishErrorKind::StreamNotFound && !retried => {
                // The server lost its store: make the streams again, then publish once more.
                inner.ensure_streams().await?;
                retried = true;
                continue;
            }
            Err(err) if err.kind() == PublishErrorKind::MaxPayloadExceeded => Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!("the event for `{subject}` is larger than the NATS server accepts: {err}"),
            )),
            Err(err) if err.kind() == PublishErrorKind::StreamNotFound => {
                Err(Error::broker_unavailable(format!(
                    "cannot publish to `{subject}`: no JetStream stream captures it (events go to `{}`)",
                    inner.subjects.all_events()
                )))
            }
            Err(err) => Err(Error::broker_unavailable(format!(
                "cannot publish to `{subject}`: JetStream did not confirm storing it: {err}"
            ))),
        };
    }
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

    /// Publishes to JetStream and waits until the server has stored the message.
    async fn store(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<(), JetStreamPublishError> {
        self.jetstream
            .publish_with_headers(subject.to_owned(), headers, payload)
            .await?
            .await
            .map(drop)
    }
}
