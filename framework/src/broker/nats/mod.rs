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

mod backlog;
mod commands;
mod delivery;
mod micro;
mod options;
mod positions;
mod replies;
mod signing;
mod streams;
mod subscriptions;
mod wire;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream;
use async_nats::{Client, ConnectOptions, Event};
use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::timeout;

pub use self::options::NatsOptions;
use self::options::{explain_connect_error, parse_servers};
use self::replies::{Delivering, Replies};
use self::signing::Signer;
use super::spi::{
    Announcements, Broker, CommandStats, Endpoint, EventHandler, EventSchema, Message,
    RequestHandler, Subjects, SubscriptionSpec, SubscriptionStats, Work,
};
use crate::config::StreamStorage;
use crate::error::Error;
use crate::outage::Outage;
use crate::redact::mask_urls;

/// How long `connect` tries each server before it reports it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on flushes at shutdown and on confirming subscriptions at start, so that a lost
/// connection cannot hold either up.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an instance running a command tells its caller that it still does, once the
/// command has waited this long, when the caller asked (see [`wire::PROGRESS_TOKEN`]).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Commands and events over NATS, shared by every instance connected to the same servers.
/// Clones share one connection.
#[derive(Clone)]
pub struct NatsBroker {
    inner: Arc<Inner>,
}

/// How the event and dead-letter streams are created, when this instance is the first to need
/// them. Streams that already exist are used as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamSettings {
    /// How long an event is kept (`COHORT_EVENT_RETENTION`, default 7 days).
    pub max_age: Duration,
    /// Copies of each stream in a NATS cluster (`COHORT_STREAM_REPLICAS`, default 1; 3 for HA).
    pub replicas: usize,
    /// Where the streams keep events (`COHORT_STREAM_STORAGE`, default on disk).
    pub storage: StreamStorage,
    /// How long the events stream remembers a message id to drop a second publish of it
    /// (`COHORT_DUPLICATE_WINDOW`, default 2 minutes).
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            max_age: Duration::from_secs(7 * 24 * 3600),
            replicas: 1,
            storage: StreamStorage::File,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

struct Inner {
    client: Client,
    jetstream: jetstream::Context,
    subjects: Subjects,
    streams: StreamSettings,
    instance_id: String,
    /// Signs what this instance sends and checks what it receives, with a cluster key.
    signer: Signer,
    /// The server addresses as configured, with passwords masked, for error messages.
    urls: String,
    /// Bumped on every (re)connection: a pull request sent before it may be gone with the old
    /// connection or server, so pull loops send a new one.
    connections: watch::Receiver<u64>,
    /// The requests waiting for their replies.
    replies: Arc<Replies>,
    /// Stops taking replies once the broker is dropped, which lets the connection close.
    _replies_delivered: Delivering,
    /// Whether the streams are being made again, off the path of a publish that found none.
    ensuring_streams: AtomicBool,
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
    /// Connects to `urls` (comma-separated for a cluster) and makes sure the streams exist. A
    /// user and password (`nats://user:password@host:4222`) or a token (`nats://token@host:4222`)
    /// in the URLs sign in; `tls://` URLs require TLS.
    ///
    /// A server that cannot be reached now is an error; once connected, the client reconnects by
    /// itself, for ever, with backoff.
    pub async fn connect(
        urls: &str,
        subjects: Subjects,
        instance_id: &str,
    ) -> Result<NatsBroker, Error> {
        Self::connect_with(urls, subjects, instance_id, NatsOptions::default()).await
    }

    /// Like [`NatsBroker::connect`], signing in, securing the connection, signing messages and
    /// creating missing streams as `options` say. A refused connection is an error naming the
    /// setting to fix (without the secret).
    pub async fn connect_with(
        urls: &str,
        subjects: Subjects,
        instance_id: &str,
        options: NatsOptions,
    ) -> Result<NatsBroker, Error> {
        let signer = match &options.cluster_key {
            Some(key) => Signer::new(key, options.cluster_key_previous.as_ref()),
            None => Signer::default(),
        };
        let shown = mask_urls(urls);
        let servers = parse_servers(urls)?;
        let prepared = options.apply(&servers, ConnectOptions::new()).await?;

        let (connected, connections) = watch::channel(0u64);
        let connected = Arc::new(connected);
        let events_urls = shown.clone();
        // async-nats logs its own events at info, one a reconnection attempt: its target is
        // capped at warn (see `logging`), and these are the lines an operator gets instead.
        let outage = Arc::new(Outage::new(format!("the broker (NATS at `{shown}`)")));
        let identity = prepared.identity;
        let client = prepared
            .options
            .name(instance_id)
            .connection_timeout(CONNECT_TIMEOUT)
            .event_callback(move |event| {
                let connected = connected.clone();
                let urls = events_urls.clone();
                let outage = outage.clone();
                async move {
                    match event {
                        Event::Connected => {
                            connected.send_modify(|n| *n = n.wrapping_add(1));
                            outage.back();
                            tracing::debug!(nats = %urls, "connected to NATS");
                        }
                        Event::Disconnected => outage.lost(
                            &"disconnected",
                            "reconnecting; commands and events wait or fail (503) meanwhile",
                        ),
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
            .connect(prepared.servers)
            .await
            .map_err(|err| explain_connect_error(&err, &shown, &identity, &options.tls))?;

        let (replies, delivering) =
            Replies::start(&client, signer.clone())
                .await
                .map_err(|err| {
                    Error::unavailable(format!(
                        "cannot subscribe to the replies of commands on NATS at `{shown}`: {err}"
                    ))
                })?;
        let inner = Inner {
            jetstream: jetstream::new(client.clone()),
            client,
            subjects,
            streams: options.streams,
            instance_id: instance_id.to_owned(),
            signer,
            urls: shown,
            connections,
            replies,
            _replies_delivered: delivering,
            ensuring_streams: AtomicBool::new(false),
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
    fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// The start of this deployment's command subjects, to ask the instances about them with
    /// `$SRV` requests; an error saying we cannot `what` when disconnected, where the request
    /// would wait in the client's buffer and nobody would answer.
    fn discoverable(&self, what: &str) -> Result<String, Error> {
        match self.is_connected() {
            true => Ok(format!("{}.cmd.", self.subjects.prefix())),
            false => Err(self.not_connected(what)),
        }
    }

    fn not_connected(&self, what: &str) -> Error {
        Error::broker_unavailable(format!(
            "cannot {what}: not connected to NATS at `{}` (reconnecting)",
            self.urls
        ))
    }
}

#[async_trait]
impl Broker for NatsBroker {
    fn request<'a>(
        &'a self,
        subject: &'a str,
        msg: Message,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, Error>> {
        Box::pin(commands::request(&self.inner, subject, msg, timeout))
    }

    async fn publish(&self, subject: &str, msg: Message) -> Result<(), Error> {
        streams::publish(&self.inner, subject, msg).await
    }

    async fn serve(
        &self,
        endpoints: Vec<(Endpoint, RequestHandler)>,
        work: &Work,
    ) -> Result<(), Error> {
        commands::serve(&self.inner, endpoints, work).await
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: EventHandler,
        work: &Work,
    ) -> Result<(), Error> {
        subscriptions::subscribe(self.inner.clone(), spec, handler, work).await
    }

    async fn command_stats(&self, window: Duration) -> Result<Vec<CommandStats>, Error> {
        let commands = self
            .inner
            .discoverable("ask the instances for their stats")?;
        micro::gather_stats(&self.inner.client, &commands, window).await
    }

    async fn announce_events(&self, events: Vec<EventSchema>, work: &Work) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let service = micro::Service::events(&inner.instance_id, &events);
        let discovery = service.listen(&inner.client).await?;
        if !server_caught_up(&inner.client).await {
            tracing::warn!(nats = %inner.urls, "NATS did not confirm the events' announcement in time");
        }
        work.tasks
            .spawn(discovery.answer(inner.client.clone(), work.stop.clone()));
        Ok(())
    }

    async fn announced(&self, window: Duration) -> Result<Announcements, Error> {
        let inner = &self.inner;
        let commands = inner.discoverable("ask the instances what they announce")?;
        micro::gather_announced(&inner.client, &commands, &inner.subjects, window).await
    }

    async fn subscription_stats(
        &self,
        spec: &SubscriptionSpec,
    ) -> Result<Option<SubscriptionStats>, Error> {
        backlog::backlog(&self.inner, spec).await.map(Some)
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
            Ok(Err(err)) => Err(Error::broker_unavailable(format!(
                "cannot flush to NATS at `{}`: {err}",
                inner.urls
            ))),
            Err(_) => Err(inner.not_connected("flush what is buffered")),
        }
    }
}

/// Whether the server has processed everything `client` sent before, found out within
/// `FLUSH_TIMEOUT`: a message to a fresh inbox, published after it all, has come back.
/// (async-nats' `flush` only writes out what is buffered, which does not tell that the server has
/// seen it.)
async fn server_caught_up(client: &Client) -> bool {
    let echoed = async {
        let inbox = client.new_inbox();
        let mut echo = client.subscribe(inbox.clone()).await.ok()?;
        client.publish(inbox, bytes::Bytes::new()).await.ok()?;
        echo.next().await
    };
    matches!(timeout(FLUSH_TIMEOUT, echoed).await, Ok(Some(_)))
}
