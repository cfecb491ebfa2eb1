//! One event's delivery: the handler runs, then the event is acknowledged, redelivered later,
//! or dead-lettered when its attempts are spent.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::{self, AckKind};
use async_nats::{HeaderMap, HeaderName};
use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::signing::{BAD_SIGNATURE, Rejection, Signer, warn_refused};
use super::wire::{header_value, metadata_of};
use crate::broker::spi::{EventHandler, Message, SubscriptionSpec, header};
use crate::error::Error;

/// What every delivery of one subscription shares.
pub(super) struct Subscription {
    pub(super) spec: SubscriptionSpec,
    pub(super) handler: EventHandler,
    /// The name of its consumer on the server.
    pub(super) consumer: String,
    /// Checks each event before its handler runs.
    pub(super) signer: Signer,
}

/// One delivery: checks the event's signature, runs the handler, then acknowledges, asks for a
/// redelivery later, or dead-letters the event when its attempts are spent.
pub(super) async fn deliver(
    message: jetstream::Message,
    subscription: Arc<Subscription>,
    _slot: OwnedSemaphorePermit,
) {
    let checked = subscription.signer.verify(
        message.subject.as_str(),
        message.headers.as_ref(),
        &message.payload,
    );
    let ack = match checked {
        Ok(()) => handle(&message, &subscription).await,
        // Boxed, as every rare path here: each delivery's task is made as large as its future.
        Err(rejection) => Box::pin(refuse(&message, &subscription, rejection)).await,
    };
    if let Err(err) = message.ack_with(ack).await {
        let spec = &subscription.spec;
        tracing::warn!(subscription = %spec.durable, error = %err, "could not acknowledge an event; NATS redelivers it after the ack wait");
    }
}

/// Runs the handler; what to tell the server about the event then.
async fn handle(message: &jetstream::Message, subscription: &Subscription) -> AckKind {
    let spec = &subscription.spec;
    let attempt = message
        .info()
        .ok()
        .and_then(|info| u32::try_from(info.delivered).ok())
        .unwrap_or(1)
        .max(1);
    if attempt > 1 {
        spec.report.redelivered();
    }
    let event = Message {
        meta: Box::new(metadata_of(message.headers.as_ref())),
        payload: message.payload.clone(),
    };
    let handling = AssertUnwindSafe((subscription.handler)(event)).catch_unwind();
    let outcome = match with_progress(message, spec.ack_wait, handling).await {
        Ok(outcome) => outcome,
        Err(panic) => Err(Error::panicked("the event handler", panic.as_ref())),
    };

    match outcome {
        Ok(()) => AckKind::Ack,
        Err(err) => match spec.retry_after(attempt, &err) {
            Some(wait) => {
                tracing::warn!(subscription = %spec.durable, attempt, error = %err, "event handler failed; will retry");
                AckKind::Nak(Some(wait))
            }
            None => match Box::pin(dead_letter(message, subscription, &err)).await {
                Ok(()) => {
                    spec.report.dead_lettered();
                    tracing::error!(subscription = %spec.durable, attempts = attempt, error = %err, dead_letter = %spec.dead_letter_subject, "event handler gave up; event dead-lettered");
                    AckKind::Term
                }
                Err(dead_letter_err) => {
                    tracing::error!(subscription = %spec.durable, attempts = attempt, error = %err, dead_letter_error = %dead_letter_err, "event handler gave up, and the event could not be dead-lettered; will retry");
                    AckKind::Nak(Some(spec.backoff_after(attempt)))
                }
            },
        },
    }
}

/// Dead-letters an event that failed its signature check, at once: no redelivery can make it
/// valid, and no handler runs.
async fn refuse(
    message: &jetstream::Message,
    subscription: &Subscription,
    rejection: Rejection,
) -> AckKind {
    let spec = &subscription.spec;
    warn_refused(
        "an event",
        &message.subject,
        message.headers.as_ref(),
        rejection,
    );
    let err =
        Error::unauthorized(format!("the event is refused: {rejection}")).with_code(BAD_SIGNATURE);
    match Box::pin(dead_letter(message, subscription, &err)).await {
        Ok(()) => {
            spec.report.dead_lettered();
            AckKind::Term
        }
        Err(dead_letter_err) => {
            tracing::error!(subscription = %spec.durable, error = %dead_letter_err, "a refused event could not be dead-lettered; will retry");
            AckKind::Nak(Some(spec.backoff_after(1)))
        }
    }
}

/// Runs `handling`, telling the server every half ack wait that the event is still being worked
/// on, so that a slow handler keeps its event.
async fn with_progress<T>(
    message: &jetstream::Message,
    ack_wait: Duration,
    handling: impl Future<Output = T>,
) -> T {
    let every = ack_wait / 2;
    if every.is_zero() {
        return handling.await;
    }
    let mut handling = std::pin::pin!(handling);
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        tokio::select! {
            biased;
            outcome = &mut handling => return outcome,
            _ = ticks.tick() => {
                if let Err(err) = Box::pin(message.ack_with(AckKind::Progress)).await {
                    tracing::debug!(error = %err, "could not extend the ack wait of an event");
                }
            }
        }
    }
}

/// Stores the event in the dead-letter stream, with its headers and the last error.
async fn dead_letter(
    message: &jetstream::Message,
    subscription: &Subscription,
    err: &Error,
) -> Result<(), Error> {
    // The event's own headers, but none of NATS's: an expected-stream or expected-sequence
    // header of the original publish would make this one fail.
    let mut headers: HeaderMap = message
        .headers
        .iter()
        .flat_map(HeaderMap::iter)
        .filter(|(name, _)| !AsRef::<str>::as_ref(*name).starts_with("Nats-"))
        .flat_map(|(name, values)| values.iter().map(|value| (name.clone(), value.clone())))
        .collect();
    headers.insert(
        HeaderName::from_static(header::ERROR),
        header_value(err.to_string()),
    );
    // One dead letter per event and consumer, however often this is retried.
    let original = match message
        .headers
        .as_ref()
        .and_then(|h| h.get(NATS_MESSAGE_ID))
    {
        Some(id) => id.as_str().to_owned(),
        None => message
            .info()
            .map(|info| info.stream_sequence.to_string())
            .unwrap_or_default(),
    };
    headers.insert(
        NATS_MESSAGE_ID,
        header_value(format!("{}:{original}", subscription.consumer)),
    );
    let subject = &subscription.spec.dead_letter_subject;
    let stored = async {
        message
            .context
            .publish_with_headers(subject.clone(), headers, message.payload.clone())
            .await?
            .await
    };
    stored.await.map(drop).map_err(|err| {
        Error::broker_unavailable(format!(
            "cannot store the dead letter on `{subject}`: {err}"
        ))
    })
}
