//! The NATS broker: commands over core request/reply, announced with the NATS micro protocol
//! (`$SRV.PING`, `$SRV.INFO`, `$SRV.STATS`); events in a JetStream stream, consumed through durable
//! pull consumers.
//!
//! Everything on the wire follows "Wire protocol (NATS)" in the design: metadata in headers, the
//! body is the payload's JSON, so a NATS client in any language can call a command, publish an
//! event or read one without Cohort's code.
//!
//! It needs nothing newer than nats-server 2.9: one filter subject per consumer, no consumer
//! metadata, no pull-request pinning.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::{PublishError as JetStreamPublishError, PublishErrorKind};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind, ErrorCode};
use async_nats::service::ServiceExt;
use async_nats::{
    Client, ConnectOptions, Event, HeaderMap, HeaderName, HeaderValue, RequestErrorKind,
    ServerAddr, StatusCode, Subject, Subscriber,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, sleep, timeout};

use super::{Broker, Endpoint, EventHandler, RequestHandler, SubscriptionSpec, Work};
use crate::error::{Error, ErrorKind};
use crate::message::{Message, Metadata, Subjects, header};

/// How long `connect` tries each server before it reports it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
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
/// Bound on flushes at shutdown, so that a lost connection cannot hold shutdown up.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Commands and events over NATS, shared by every instance connected to the same servers.
/// Clones share one connection.
#[derive(Clone)]
pub struct NatsBroker {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    jetstream: jetstream::Context,
    subjects: Subjects,
    instance_id: String,
    /// The server addresses as configured, with passwords masked, for error messages.
    urls: String,
    /// Bumped on every (re)connection: a pull request sent before it may be gone with the old
    /// connection or server, so pull loops send a new one.
    connections: watch::Receiver<u64>,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("urls", &self.inner.urls)
            .field("instance_id", &self.inner.instance_id)
            .field("subjects", &self.inner.subjects)
            .finish_non_exhaustive()
    }
}

impl NatsBroker {
    /// Connects to `urls` (comma-separated for a cluster) and makes sure the streams exist.
    ///
    /// A server that cannot be reached now is an error; once connected, the client reconnects by
    /// itself, for ever, with backoff.
    pub async fn connect(
        urls: &str,
        subjects: Subjects,
        instance_id: &str,
    ) -> Result<NatsBroker, Error> {
        let shown = mask_passwords(urls);
        let servers = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| {
                url.parse::<ServerAddr>().map_err(|err| {
                    unavailable(format!(
                        "`{}` is not a NATS server address ({err}); check COHORT_NATS_URL",
                        mask_passwords(url)
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(unavailable(
                "no NATS server address given; set COHORT_NATS_URL, such as nats://127.0.0.1:4222",
            ));
        }

        let (connected, connections) = watch::channel(0u64);
        let connected = Arc::new(connected);
        let events_urls = shown.clone();
        let client = ConnectOptions::new()
            .name(instance_id)
            .connection_timeout(CONNECT_TIMEOUT)
            .event_callback(move |event| {
                let connected = connected.clone();
                let urls = events_urls.clone();
                async move {
                    match event {
                        Event::Connected => {
                            connected.send_modify(|n| *n = n.wrapping_add(1));
                            tracing::info!(nats = %urls, "connected to NATS");
                        }
                        Event::Disconnected => {
                            tracing::warn!(nats = %urls, "lost the NATS connection; reconnecting")
                        }
                        Event::LameDuckMode => {
                            tracing::warn!(nats = %urls, "the NATS server is shutting down (lame duck mode)")
                        }
                        Event::SlowConsumer(sid) => {
                            tracing::warn!(nats = %urls, sid, "NATS dropped messages: this instance reads too slowly")
                        }
                        other => tracing::debug!(nats = %urls, event = %other, "NATS connection event"),
                    }
                }
            })
            .connect(servers)
            .await
            .map_err(|err| {
                unavailable(format!(
                    "cannot connect to NATS at `{shown}` (COHORT_NATS_URL): {err}; is nats-server running there, with JetStream (-js)?"
                ))
            })?;

        let inner = Inner {
            jetstream: jetstream::new(client.clone()),
            client,
            subjects,
            instance_id: instance_id.to_owned(),
            urls: shown,
            connections,
        };
        inner.ensure_streams().await?;
        Ok(NatsBroker {
            inner: Arc::new(inner),
        })
    }

    /// The underlying NATS client, for what Cohort does not cover.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }
}

impl Inner {
    /// Creates the events and dead-letter streams unless they exist. Instances starting together
    /// may race; whichever creates a stream first wins, the others find it.
    async fn ensure_streams(&self) -> Result<(), Error> {
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
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            ..Default::default()
        };
        match self.jetstream.get_or_create_stream(config).await {
            Ok(_) => Ok(()),
            // Another instance created it between our lookup and our create.
            Err(err) => match self.jetstream.get_stream(name).await {
                Ok(_) => Ok(()),
                Err(_) => Err(unavailable(format!(
                    "cannot create the JetStream stream `{name}` on NATS at `{}`: {err}; is JetStream enabled (nats-server -js)?",
                    self.urls
                ))),
            },
        }
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
                Err(_) => Err(unavailable(format!(
                    "cannot create the JetStream consumer `{name}` on `{stream}` at `{}`: {err}",
                    self.urls
                ))),
            };
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

    fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    fn not_connected(&self, what: &str) -> Error {
        unavailable(format!(
            "cannot {what}: not connected to NATS at `{}` (reconnecting)",
            self.urls
        ))
    }
}

#[async_trait]
impl Broker for NatsBroker {
    async fn request(
        &self,
        subject: &str,
        msg: Message,
        timeout: Duration,
    ) -> Result<Message, Error> {
        let inner = &*self.inner;
        if inner.client.connection_state() == State::Disconnected {
            return Err(inner.not_connected(&format!("send the command to `{subject}`")));
        }
        let request = async_nats::Request::new()
            .headers(into_header_map(msg.meta))
            .payload(msg.payload)
            .timeout(Some(timeout));
        match inner.client.send_request(subject.to_owned(), request).await {
            Ok(reply) => Ok(Message {
                meta: metadata_of(reply.headers.as_ref()),
                payload: reply.payload,
            }),
            Err(err) => Err(match err.kind() {
                RequestErrorKind::NoResponders => no_responders(subject),
                RequestErrorKind::TimedOut if inner.is_connected() => Error::new(
                    ErrorKind::Timeout,
                    format!("`{subject}` did not answer in {timeout:?}"),
                ),
                RequestErrorKind::TimedOut => {
                    inner.not_connected(&format!("get the answer of `{subject}`"))
                }
                RequestErrorKind::MaxPayloadExceeded => Error::new(
                    ErrorKind::PayloadTooLarge,
                    format!(
                        "the command to `{subject}` is larger than the NATS server accepts: {err}"
                    ),
                ),
                _ => unavailable(format!(
                    "cannot send the command to `{subject}` over NATS: {err}"
                )),
            }),
        }
    }

    async fn publish(&self, subject: &str, msg: Message) -> Result<(), Error> {
        let inner = &*self.inner;
        if inner.client.connection_state() == State::Disconnected {
            return Err(inner.not_connected(&format!("publish to `{subject}`")));
        }
        let mut retried = false;
        loop {
            return match inner
                .store(subject, event_headers(&msg.meta), msg.payload.clone())
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
                    format!(
                        "the event for `{subject}` is larger than the NATS server accepts: {err}"
                    ),
                )),
                Err(err) if err.kind() == PublishErrorKind::StreamNotFound => {
                    Err(unavailable(format!(
                        "cannot publish to `{subject}`: no JetStream stream captures it (events go to `{}`)",
                        inner.subjects.all_events()
                    )))
                }
                Err(err) => Err(unavailable(format!(
                    "cannot publish to `{subject}`: JetStream did not confirm storing it: {err}"
                ))),
            };
        }
    }

    async fn serve(
        &self,
        endpoints: Vec<(Endpoint, RequestHandler)>,
        work: &Work,
    ) -> Result<(), Error> {
        let inner = &*self.inner;
        let mut services = Vec::new();
        let mut intakes = Vec::new();
        for (service, endpoints) in by_service(endpoints) {
            match announce(inner, &service, endpoints, &mut intakes).await {
                Ok(announced) => services.push(announced),
                Err(err) => {
                    for announced in services {
                        let _ = announced.stop().await;
                    }
                    return Err(err);
                }
            }
        }
        // Once the server has seen the subscriptions, any instance's request can reach them.
        if !matches!(
            timeout(FLUSH_TIMEOUT, inner.client.flush()).await,
            Ok(Ok(()))
        ) {
            tracing::warn!(nats = %inner.urls, "NATS did not confirm the command subscriptions in time");
        }

        for (endpoint, handler) in intakes {
            work.tasks.spawn(take_requests(
                endpoint,
                handler,
                work.clone(),
                inner.client.clone(),
            ));
        }
        let stop = work.stop.clone();
        work.tasks.spawn(async move {
            stop.cancelled().await;
            // No more answers to `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` from this instance.
            for service in services {
                let _ = service.stop().await;
            }
        });
        Ok(())
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: EventHandler,
        work: &Work,
    ) -> Result<(), Error> {
        let broker = self.inner.clone();
        let consumer = consumer_name(&spec, &broker.instance_id);
        let config = consumer_config(&spec, &consumer);
        broker.ensure_consumer(&config).await?;

        let inbox = Subject::from(broker.client.new_inbox());
        let messages = broker
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|err| {
                unavailable(format!(
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

    fn is_distributed(&self) -> bool {
        true
    }

    fn is_ready(&self) -> bool {
        self.inner.is_connected()
    }

    async fn close(&self) -> Result<(), Error> {
        let inner = &*self.inner;
        match timeout(FLUSH_TIMEOUT, inner.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(unavailable(format!(
                "cannot flush to NATS at `{}`: {err}",
                inner.urls
            ))),
            Err(_) => Err(inner.not_connected("flush what is buffered")),
        }
    }
}

// ---- commands ----

/// The endpoints grouped by service, in the order the services first appear.
fn by_service(
    endpoints: Vec<(Endpoint, RequestHandler)>,
) -> Vec<(String, Vec<(Endpoint, RequestHandler)>)> {
    let mut services: Vec<(String, Vec<(Endpoint, RequestHandler)>)> = Vec::new();
    for (endpoint, handler) in endpoints {
        match services
            .iter_mut()
            .find(|(service, _)| *service == endpoint.service)
        {
            Some((_, endpoints)) => endpoints.push((endpoint, handler)),
            None => services.push((endpoint.service.clone(), vec![(endpoint, handler)])),
        }
    }
    services
}

/// Starts one micro service for `service` and subscribes its endpoints, which go to `intakes`.
async fn announce(
    inner: &Inner,
    service: &str,
    endpoints: Vec<(Endpoint, RequestHandler)>,
    intakes: &mut Vec<(async_nats::service::endpoint::Endpoint, RequestHandler)>,
) -> Result<async_nats::service::Service, Error> {
    // Micro versions are semver; a service's commands each have their own version.
    let version = endpoints.iter().map(|(e, _)| e.version).max().unwrap_or(1);
    let announced = inner
        .client
        .service_builder()
        .description(format!("Cohort service `{service}`"))
        .metadata(HashMap::from([(
            "cohort.instance".to_owned(),
            inner.instance_id.clone(),
        )]))
        .start(micro_name(service), format!("{version}.0.0"))
        .await
        .map_err(|err| {
            unavailable(format!(
                "cannot announce the service `{service}` on NATS: {err}"
            ))
        })?;

    let mut names = HashSet::new();
    for (endpoint, handler) in endpoints {
        // Two versions of a command live in one micro service, under distinct names.
        let name = if names.insert(endpoint.name.clone()) {
            endpoint.name
        } else {
            format!("{}_v{}", endpoint.name, endpoint.version)
        };
        let mut metadata = endpoint.metadata;
        if !endpoint.description.is_empty() {
            metadata
                .entry("description".to_owned())
                .or_insert(endpoint.description);
        }
        let subject = endpoint.subject;
        let added = announced
            .endpoint_builder()
            .name(&name)
            .metadata(metadata)
            .queue_group(endpoint.queue_group)
            .add(&subject)
            .await;
        match added {
            Ok(added) => intakes.push((added, handler)),
            Err(err) => {
                let _ = announced.stop().await;
                return Err(unavailable(format!(
                    "cannot serve `{subject}` on NATS: {err}"
                )));
            }
        }
    }
    Ok(announced)
}

/// Takes the requests of one endpoint until the work stops; then unsubscribes and still answers
/// the requests that had already arrived.
async fn take_requests(
    mut endpoint: async_nats::service::endpoint::Endpoint,
    handler: RequestHandler,
    work: Work,
    client: Client,
) {
    let mut intake = Intake::default();
    let stopped = work.stop.cancelled();
    let mut stopped = std::pin::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => break,
            request = endpoint.next() => match request {
                Some(request) => intake.start(request, &handler, &work),
                None => break,
            },
        }
    }
    if let Err(err) = endpoint.stop().await {
        tracing::debug!(error = %err, "could not unsubscribe an endpoint");
    }
    while let Some(request) = endpoint.next().await {
        intake.start(request, &handler, &work);
    }
    // Have the server see the unsubscribe before this instance reports the endpoint stopped.
    let _ = timeout(FLUSH_TIMEOUT, client.flush()).await;
}

/// How one endpoint starts its requests.
///
/// Most commands finish without waiting on anything (no I/O, no timer): those are answered right
/// where they are taken, which saves a task and, above all, waking another worker thread for
/// every request. A command that does wait goes on with its own task from where it stopped. An
/// endpoint whose commands compute for long before their first wait would hold up the requests
/// behind them, so it spawns every request for a while.
#[derive(Default)]
struct Intake {
    /// Requests to spawn at once before trying to answer in place again.
    spawn_next: u32,
}

/// The longest a command may compute in place before its endpoint stops answering in place.
const IN_PLACE_LIMIT: Duration = Duration::from_millis(1);
/// Requests an endpoint then spawns before it tries again.
const SPAWN_AFTER_SLOW: u32 = 1000;

impl Intake {
    fn start(
        &mut self,
        request: async_nats::service::Request,
        handler: &RequestHandler,
        work: &Work,
    ) {
        let answering = answer(request, handler.clone());
        if self.spawn_next > 0 {
            self.spawn_next -= 1;
            work.tasks.spawn(answering);
            return;
        }
        let mut answering = Box::pin(answering);
        let started = Instant::now();
        // A panic in the first step must not take the endpoint down with it.
        match std::panic::catch_unwind(AssertUnwindSafe(|| (&mut answering).now_or_never())) {
            Ok(Some(())) => {}
            Ok(None) => {
                work.tasks.spawn(answering);
            }
            Err(panic) => tracing::error!(
                panic = panic_message(&*panic),
                "a command handler panicked; its caller gets no answer"
            ),
        }
        if started.elapsed() > IN_PLACE_LIMIT {
            self.spawn_next = SPAWN_AFTER_SLOW;
        }
    }
}

async fn answer(mut request: async_nats::service::Request, handler: RequestHandler) {
    let msg = Message {
        meta: metadata_of(request.message.headers.as_ref()),
        payload: std::mem::take(&mut request.message.payload),
    };
    let reply = handler(msg).await;
    let headers = into_header_map(reply.meta);
    if let Err(err) = request
        .respond_with_headers(Ok(reply.payload), headers)
        .await
    {
        // A request published without a reply subject, or the connection is gone.
        tracing::debug!(subject = %request.message.subject, error = %err, "could not send a reply");
    }
}

/// Micro service names allow `A-Z a-z 0-9 _ -` only.
fn micro_name(service: &str) -> String {
    service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

// ---- events ----

/// What every delivery of one subscription shares.
struct Subscription {
    spec: SubscriptionSpec,
    handler: EventHandler,
    consumer: String,
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
        // The server stops delivering to a pull request whose inbox nobody listens on.
        let _ = self.messages.unsubscribe().await;
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

/// One delivery: runs the handler, then acknowledges, asks for a redelivery later, or
/// dead-letters the event when its attempts are spent.
async fn deliver(
    message: jetstream::Message,
    subscription: Arc<Subscription>,
    _slot: OwnedSemaphorePermit,
) {
    let spec = &subscription.spec;
    let attempt = message
        .info()
        .ok()
        .and_then(|info| u32::try_from(info.delivered).ok())
        .unwrap_or(1)
        .max(1);
    let event = Message {
        meta: metadata_of(message.headers.as_ref()),
        payload: message.payload.clone(),
    };
    let handling = AssertUnwindSafe((subscription.handler)(event)).catch_unwind();
    let outcome = match with_progress(&message, spec.ack_wait, handling).await {
        Ok(outcome) => outcome,
        Err(panic) => Err(Error::internal(format!(
            "the event handler panicked: {}",
            panic_message(&*panic)
        ))),
    };

    let ack = match outcome {
        Ok(()) => AckKind::Ack,
        Err(err) if attempt >= spec.max_attempts => {
            match dead_letter(&message, &subscription, &err).await {
                Ok(()) => {
                    tracing::error!(subscription = %spec.durable, attempts = attempt, error = %err, dead_letter = %spec.dead_letter_subject, "event handler gave up; event dead-lettered");
                    AckKind::Term
                }
                Err(dead_letter_err) => {
                    tracing::error!(subscription = %spec.durable, attempts = attempt, error = %err, dead_letter_error = %dead_letter_err, "event handler gave up, and the event could not be dead-lettered; will retry");
                    AckKind::Nak(Some(spec.backoff_after(attempt)))
                }
            }
        }
        Err(err) => {
            tracing::warn!(subscription = %spec.durable, attempt, error = %err, "event handler failed; will retry");
            AckKind::Nak(Some(spec.backoff_after(attempt)))
        }
    };
    if let Err(err) = message.ack_with(ack).await {
        tracing::warn!(subscription = %spec.durable, error = %err, "could not acknowledge an event; NATS redelivers it after the ack wait");
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
                if let Err(err) = message.ack_with(AckKind::Progress).await {
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
        unavailable(format!(
            "cannot store the dead letter on `{subject}`: {err}"
        ))
    })
}

/// `{durable}` shared by all instances, or `{durable}__{instance}` for an every-instance one.
fn consumer_name(spec: &SubscriptionSpec, instance_id: &str) -> String {
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
        // A new subscription starts with the events published after it first started.
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

// ---- the wire form ----

/// The headers of `meta`.
fn header_map(meta: &Metadata) -> HeaderMap {
    into_header_map(meta.clone())
}

/// The headers of `meta`, as [`Metadata::headers`] lists them, moving its strings instead of
/// copying them: every command and reply goes through here.
fn into_header_map(meta: Metadata) -> HeaderMap {
    // Exhaustive, so that a new field of `Metadata` cannot be forgotten here.
    let Metadata {
        message_id,
        traceparent,
        principal,
        tenant,
        session,
        deadline,
        instance,
        service,
        content_type,
        status,
        session_set,
        session_clear,
        error,
    } = meta;
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: Option<String>| {
        if let Some(value) = value {
            headers.insert(HeaderName::from_static(name), header_value(value));
        }
    };
    put(header::MESSAGE_ID, message_id);
    put(header::TRACEPARENT, traceparent);
    put(header::PRINCIPAL, principal);
    put(header::TENANT, tenant);
    put(header::SESSION, session);
    put(header::DEADLINE, deadline.map(|d| d.to_string()));
    put(header::INSTANCE, instance);
    put(header::SERVICE, service);
    put(header::CONTENT_TYPE, content_type);
    put(header::STATUS, status.map(|s| s.to_string()));
    put(header::SESSION_SET, session_set);
    put(header::SESSION_CLEAR, session_clear.then(|| "1".to_owned()));
    put(header::ERROR, error);
    headers
}

/// The headers of an event: its metadata, and its message id again as `Nats-Msg-Id`, so that
/// JetStream drops a second publish of it (a retry) within its duplicate window.
fn event_headers(meta: &Metadata) -> HeaderMap {
    let mut headers = header_map(meta);
    if let Some(id) = &meta.message_id {
        headers.insert(NATS_MESSAGE_ID, header_value(id.clone()));
    }
    headers
}

/// A header value; line breaks (which would end the header) become spaces.
fn header_value(value: String) -> HeaderValue {
    if value.contains(['\r', '\n']) {
        HeaderValue::from(value.replace(['\r', '\n'], " "))
    } else {
        HeaderValue::from(value)
    }
}

/// The metadata carried by `headers`.
fn metadata_of(headers: Option<&HeaderMap>) -> Metadata {
    match headers {
        Some(headers) => Metadata::from_headers(headers.iter().flat_map(|(name, values)| {
            let name: &str = name.as_ref();
            values.iter().map(move |value| (name, value.as_str()))
        })),
        None => Metadata::default(),
    }
}

// ---- errors ----

fn unavailable(message: impl Into<String>) -> Error {
    Error::unavailable(message)
}

fn no_responders(subject: &str) -> Error {
    Error::new(
        ErrorKind::NoResponders,
        format!("no instance serves `{subject}`"),
    )
    .with_code("no_responders")
}

fn jetstream_code(err: &async_nats::jetstream::stream::ConsumerError) -> Option<ErrorCode> {
    match err.kind() {
        async_nats::jetstream::stream::ConsumerErrorKind::JetStream(err) => Some(err.error_code()),
        _ => None,
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string panic")
}

/// `nats://user:secret@host` → `nats://user:***@host`, for messages and logs.
fn mask_passwords(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let Some((scheme, rest)) = url.split_once("://") else {
                return url.to_owned();
            };
            match rest.split_once('@') {
                Some((credentials, host)) => match credentials.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                    None => format!("{scheme}://***@{host}"),
                },
                None => url.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_passwords("nats://a:secret@h1:4222,nats://h2:4222"),
            "nats://a:***@h1:4222,nats://h2:4222"
        );
        assert_eq!(mask_passwords("nats://token@h"), "nats://***@h");
        assert_eq!(mask_passwords("127.0.0.1:4222"), "127.0.0.1:4222");
    }

    #[test]
    fn nats_headers_are_the_metadata_headers() {
        let meta = Metadata {
            message_id: Some("m1".into()),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            principal: Some("alice".into()),
            tenant: Some("acme".into()),
            session: Some("s1".into()),
            deadline: Some(1_700_000_000_000),
            instance: Some("i1".into()),
            service: Some("orders".into()),
            content_type: Some("application/json".into()),
            status: Some(201),
            session_set: Some("s2".into()),
            session_clear: true,
            error: Some("boom".into()),
        };
        let headers = header_map(&meta);
        let expected = meta.headers();
        assert_eq!(headers.len(), expected.len());
        for (name, value) in expected {
            assert_eq!(
                headers.get(name).map(HeaderValue::as_str),
                Some(value.as_str()),
                "{name}"
            );
        }
    }

    #[test]
    fn metadata_round_trips_through_nats_headers() {
        let meta = Metadata {
            message_id: Some("m1".into()),
            principal: Some("alice".into()),
            deadline: Some(42),
            status: Some(409),
            session_clear: true,
            error: Some("line one\nline two".into()),
            ..Metadata::default()
        };
        let back = metadata_of(Some(&header_map(&meta)));
        assert_eq!(back.error.as_deref(), Some("line one line two"));
        assert_eq!(
            Metadata {
                error: meta.error.clone(),
                ..back
            },
            meta
        );
        assert_eq!(metadata_of(None), Metadata::default());
    }

    #[test]
    fn names_fit_nats() {
        assert_eq!(micro_name("orders.v1 x"), "orders_v1_x");
        let spec = SubscriptionSpec {
            service: "s".into(),
            name: "n".into(),
            filter_subject: "cohort.evt.*.e".into(),
            durable: "s__n".into(),
            every_instance: true,
            max_attempts: 3,
            backoff: vec![],
            ack_wait: Duration::from_secs(1),
            dead_letter_subject: "cohort.dlq.s.n".into(),
        };
        assert_eq!(consumer_name(&spec, "host.a b"), "s__n__host_a_b");
        let config = consumer_config(&spec, "s__n__x");
        assert_eq!(config.inactive_threshold, INSTANCE_CONSUMER_TTL);
        assert_eq!(config.max_deliver, -1);
    }
}
