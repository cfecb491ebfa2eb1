//! Events out: the durable pull consumer of each subscription, and the loop that pulls its events
//! and starts their deliveries.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, AckKind, ErrorCode};
use async_nats::{Client, StatusCode, Subject, Subscriber};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep, timeout};

use super::delivery::{Subscription, deliver};
use super::{FLUSH_TIMEOUT, Inner, server_caught_up};
use crate::broker::spi::{EventHandler, StartPosition, SubscriptionSpec, Work};
use crate::error::Error;

/// Deliveries of one subscription that run at once on one instance. The instance asks the server
/// for no more than it has room for, so an event never waits in this process for a free slot
/// while its ack wait runs out.
const MAX_IN_FLIGHT: usize = 64;
/// How long a pull request waits on the server for events. Short, so that one the server forgot
/// (it restarted) is soon replaced.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// How long past its expiry a pull request is still presumed alive.
const PULL_GRACE: Duration = Duration::from_secs(2);
/// How long the every-instance consumer of an instance that is gone stays on the server.
const INSTANCE_CONSUMER_TTL: Duration = Duration::from_secs(300);
/// Wait before asking again after the server refused or lost a consumer.
const RETRY_DELAY: Duration = Duration::from_millis(500);

impl Inner {
    /// Makes the consumer `name` of `spec` and returns its configuration. A positioned
    /// every-instance consumer is made anew at its position, on every start of the instance (one
    /// an earlier start left is removed); any other is made unless it exists.
    async fn open_consumer(
        &self,
        spec: &SubscriptionSpec,
        name: &str,
    ) -> Result<pull::Config, Error> {
        let mut config = consumer_config(spec, name);
        if spec.every_instance && spec.start != StartPosition::Resume {
            self.delete_consumer(name).await?;
            config.deliver_policy = self.deliver_policy(spec).await?;
        }
        self.ensure_consumer(&config).await?;
        Ok(config)
    }

    /// Creates the consumer unless it exists. A consumer that exists with another configuration
    /// (an older deployment's) is used as it is.
    async fn ensure_consumer(&self, config: &pull::Config) -> Result<(), Error> {
        let stream = self.subjects.events_stream();
        let name = config.durable_name.as_deref().unwrap_or_default();
        let mut created_streams = false;
        loop {
            let err = match self
                .jetstream
                .create_consumer_on_stream(config.clone(), &stream)
                .await
            {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            if jetstream_code(&err) == Some(ErrorCode::STREAM_NOT_FOUND) && !created_streams {
                // The server lost its store (or someone deleted the stream): make it again.
                self.ensure_streams().await?;
                created_streams = true;
                continue;
            }
            return match self
                .jetstream
                .get_consumer_from_stream::<pull::Config, _, _>(name, &stream)
                .await
            {
                Ok(_) => {
                    tracing::warn!(consumer = name, stream = %stream, error = %err,
                        "the consumer exists with another configuration; using it as it is");
                    Ok(())
                }
                Err(_) => Err(Error::unavailable(format!(
                    "cannot create the JetStream consumer `{name}` on `{stream}` at `{}`: {err}",
                    self.urls
                ))),
            };
        }
    }
}

/// Consumes a subscription on this instance: see
/// [`Broker::subscribe`](crate::broker::spi::Broker::subscribe).
pub(super) async fn subscribe(
    broker: Arc<Inner>,
    spec: SubscriptionSpec,
    handler: EventHandler,
    work: &Work,
) -> Result<(), Error> {
    let consumer = consumer_name(&spec, &broker.instance_id);
    let config = broker.open_consumer(&spec, &consumer).await?;

    let inbox = Subject::from(broker.client.new_inbox());
    let messages = broker
        .client
        .subscribe(inbox.clone())
        .await
        .map_err(|err| {
            Error::unavailable(format!(
                "cannot subscribe for the events of `{consumer}`: {err}"
            ))
        })?;
    let next = Subject::from(format!(
        "$JS.API.CONSUMER.MSG.NEXT.{}.{consumer}",
        broker.subjects.events_stream()
    ));
    let puller = Puller {
        subscription: Arc::new(Subscription {
            spec,
            handler,
            consumer,
            signer: broker.signer.clone(),
        }),
        broker,
        config,
        next,
        inbox,
        messages,
        slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        work: work.clone(),
    };
    work.tasks.spawn(puller.run());
    Ok(())
}

/// The loop that pulls one subscription's events from its consumer and starts their deliveries.
///
/// It keeps one pull request outstanding, for as many events as it has free slots, so that events
/// wait on the server (where another instance can take them), not in this process.
struct Puller {
    broker: Arc<Inner>,
    subscription: Arc<Subscription>,
    config: pull::Config,
    /// `$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}`
    next: Subject,
    inbox: Subject,
    messages: Subscriber,
    slots: Arc<Semaphore>,
    work: Work,
}

/// What a message on the pull inbox means.
enum Pulled {
    Event,
    /// The pull request ended (expired, or the server cut it short).
    RequestEnded {
        pause: bool,
    },
    /// The consumer is gone (deleted, or its server lost it): make it again.
    ConsumerGone,
    Ignore,
}

impl Puller {
    async fn run(mut self) {
        let mut connections = self.broker.connections.clone();
        connections.borrow_and_update();
        let stop = self.work.stop.clone();
        let mut stopped = std::pin::pin!(stop.cancelled());
        // Events the outstanding pull request may still bring; zero when there is none.
        let mut outstanding = 0usize;
        let mut presumed_lost = std::pin::pin!(sleep(Duration::ZERO));
        loop {
            if outstanding == 0 {
                let free = self.slots.available_permits();
                if free == 0 {
                    tokio::select! {
                        biased;
                        () = &mut stopped => break,
                        slot = self.slots.acquire() => drop(slot),
                    }
                    continue;
                }
                if let Err(err) = self.pull(free).await {
                    tracing::warn!(consumer = %self.subscription.consumer, error = %err, "could not ask NATS for events");
                    if self.pause(RETRY_DELAY).await {
                        break;
                    }
                    continue;
                }
                outstanding = free;
                presumed_lost
                    .as_mut()
                    .reset(Instant::now() + PULL_EXPIRES + PULL_GRACE);
            }

            tokio::select! {
                biased;
                () = &mut stopped => break,
                changed = connections.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    outstanding = 0;
                }
                () = presumed_lost.as_mut() => outstanding = 0,
                message = self.messages.next() => {
                    let Some(message) = message else {
                        tracing::warn!(consumer = %self.subscription.consumer, "the NATS connection closed; no more events");
                        break;
                    };
                    match classify(&message) {
                        Pulled::Event => {
                            outstanding = outstanding.saturating_sub(1);
                            if !self.start(message).await {
                                break;
                            }
                        }
                        Pulled::RequestEnded { pause } => {
                            outstanding = 0;
                            if pause && self.pause(RETRY_DELAY).await {
                                break;
                            }
                        }
                        Pulled::ConsumerGone => {
                            outstanding = 0;
                            if !self.recreate_consumer().await {
                                break;
                            }
                        }
                        Pulled::Ignore => {}
                    }
                }
            }
        }
        self.hand_back().await;
    }

    /// Asks the server for up to `batch` events on this puller's inbox.
    async fn pull(&self, batch: usize) -> Result<(), async_nats::PublishError> {
        let request = format!(
            r#"{{"batch":{batch},"expires":{}}}"#,
            PULL_EXPIRES.as_nanos()
        );
        self.broker
            .client
            .publish_with_reply(self.next.clone(), self.inbox.clone(), request.into())
            .await
    }

    /// Starts the delivery of an event on its own task, once a slot is free. False when the work
    /// stopped first; the event was handed back.
    async fn start(&self, message: async_nats::Message) -> bool {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                tokio::select! {
                    biased;
                    _ = self.work.stop.cancelled() => {
                        hand_back(&self.broker.client, message).await;
                        return false;
                    }
                    slot = self.slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => return false,
                    },
                }
            }
        };
        let delivery = jetstream::Message {
            message,
            context: self.broker.jetstream.clone(),
        };
        self.work
            .tasks
            .spawn(deliver(delivery, self.subscription.clone(), slot));
        true
    }

    /// Makes the consumer again, retrying until it exists. False when the work stopped first.
    async fn recreate_consumer(&self) -> bool {
        loop {
            match self.broker.ensure_consumer(&self.config).await {
                Ok(()) => return true,
                Err(err) => {
                    tracing::warn!(consumer = %self.subscription.consumer, error = %err, "the consumer is gone and cannot be made again yet")
                }
            }
            if self.pause(RETRY_DELAY).await {
                return false;
            }
        }
    }

    /// Waits `delay`; true when the work stopped meanwhile.
    async fn pause(&self, delay: Duration) -> bool {
        tokio::select! {
            biased;
            _ = self.work.stop.cancelled() => true,
            () = sleep(delay) => false,
        }
    }

    /// Stops pulling and hands the events that arrived but did not start back to the server, which
    /// gives them to another instance at once.
    async fn hand_back(mut self) {
        // The server stops delivering to a pull request whose inbox nobody listens on; once it has
        // seen the unsubscribe, an event published later goes to another instance.
        let _ = self.messages.unsubscribe().await;
        if !server_caught_up(&self.broker.client).await {
            tracing::debug!(consumer = %self.subscription.consumer, "NATS did not confirm the end of a pull in time");
        }
        let mut handed_back = 0usize;
        while let Some(Some(message)) = self.messages.next().now_or_never() {
            if matches!(classify(&message), Pulled::Event) {
                hand_back(&self.broker.client, message).await;
                handed_back += 1;
            }
        }
        if handed_back > 0 {
            tracing::info!(consumer = %self.subscription.consumer, handed_back, "handed unstarted events back to NATS");
            let _ = timeout(FLUSH_TIMEOUT, self.broker.client.flush()).await;
        }
    }
}

fn classify(message: &async_nats::Message) -> Pulled {
    match message.status {
        None | Some(StatusCode::OK) if message.reply.is_some() => Pulled::Event,
        None | Some(StatusCode::OK) | Some(StatusCode::IDLE_HEARTBEAT) => Pulled::Ignore,
        Some(StatusCode::TIMEOUT) => Pulled::RequestEnded { pause: false },
        Some(StatusCode::NO_RESPONDERS) => Pulled::ConsumerGone,
        Some(StatusCode::REQUEST_TERMINATED)
            if message
                .description
                .as_deref()
                .is_some_and(|d| d.to_ascii_lowercase().contains("consumer deleted")) =>
        {
            Pulled::ConsumerGone
        }
        Some(status) => {
            tracing::debug!(%status, description = ?message.description, "the server ended a pull request");
            // Whatever ended it (a leader change, a limit) may end the next one too: not at once.
            Pulled::RequestEnded { pause: true }
        }
    }
}

/// Gives an event back to the server unhandled, for redelivery now.
async fn hand_back(client: &Client, message: async_nats::Message) {
    if let Some(reply) = message.reply {
        let _ = client.publish(reply, AckKind::Nak(None).into()).await;
    }
}

/// `{durable}` shared by all instances, or `{durable}__{instance}` for an every-instance one.
pub(super) fn consumer_name(spec: &SubscriptionSpec, instance_id: &str) -> String {
    let name = if spec.every_instance {
        format!("{}__{instance_id}", spec.durable)
    } else {
        spec.durable.clone()
    };
    // Consumer names may not hold subject separators, wildcards or white space.
    name.chars()
        .map(|c| {
            if c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn consumer_config(spec: &SubscriptionSpec, name: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        description: Some(format!(
            "Cohort subscription `{}` of service `{}`",
            spec.name, spec.service
        )),
        // A new consumer starts with the events published after it is made, unless positioned.
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        // Unlimited: the broker counts the attempts and dead-letters the event itself.
        max_deliver: -1,
        filter_subject: spec.filter_subject.clone(),
        inactive_threshold: if spec.every_instance {
            INSTANCE_CONSUMER_TTL
        } else {
            Duration::ZERO
        },
        ..Default::default()
    }
}

fn jetstream_code(err: &async_nats::jetstream::stream::ConsumerError) -> Option<ErrorCode> {
    match err.kind() {
        async_nats::jetstream::stream::ConsumerErrorKind::JetStream(err) => Some(err.error_code()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_fit_nats() {
        let spec = SubscriptionSpec {
            service: "s".into(),
            name: "n".into(),
            filter_subject: "cohort.evt.*.e".into(),
            durable: "s__n".into(),
            every_instance: true,
            start: StartPosition::Resume,
            max_attempts: 3,
            backoff: vec![],
            ack_wait: Duration::from_secs(1),
            dead_letter_subject: "cohort.dlq.s.n".into(),
            report: Default::default(),
        };
        assert_eq!(consumer_name(&spec, "host.a b"), "s__n__host_a_b");
        let config = consumer_config(&spec, "s__n__x");
        assert_eq!(config.inactive_threshold, INSTANCE_CONSUMER_TTL);
        assert_eq!(config.max_deliver, -1);
    }
}
