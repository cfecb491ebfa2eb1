//! Contenders "hand-written events" and "bare JetStream": what a team would write by hand with
//! async-nats (and the redis crate) to publish events to JetStream and consume them once each.
//!
//! `BENCH_EVENTS_ROLE=publish` serves `POST /emit` (see [`EmitRun`]) and `GET /readyz`: acked publishes of
//! [`Tick`]s to `bench.evt.tick`, each with a random `Nats-Msg-Id`, on the stream `BENCH_EVENTS`
//! (made with the settings Cohort gives its events stream). `BENCH_EVENTS_ROLE=consume` pulls them
//! through the durable consumer `bench_sink` (explicit ack, batches of 64, 64 events handled at
//! once, as a Cohort subscription does) and serves `GET /stats` and `DELETE /stats` (see
//! [`ConsumedStats`]). With `BENCH_REDIS_URL`, each event is handled by one Lua script that
//! records its id (skipped when seen) and adds one to a counter, before the ack; without it, the
//! ack alone (the bare ceiling).
//!
//! Env: `BENCH_NATS_URL` (default nats://127.0.0.1:4222), `BENCH_ADDR` (default 127.0.0.1:8090),
//! `BENCH_EVENTS_ROLE`, `BENCH_REDIS_URL` (consumer only; unset: no Redis).

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::pull::MessagesErrorKind;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use cohort_bench::events::{EmitRun, Latencies, Tick, emit_for};
use cohort_bench::{env_or, json_error, json_response};
use futures_util::StreamExt;
use tokio::sync::Semaphore;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const STREAM: &str = "BENCH_EVENTS";
const SUBJECT: &str = "bench.evt.tick";
const CONSUMER: &str = "bench_sink";
/// Events handled at once, and the largest pull: Cohort's per subscription and instance.
const IN_FLIGHT: usize = 64;
/// How often the server tells a waiting pull request that the consumer is fine; two silent
/// intervals make a missed heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long an event's id is remembered, as Cohort's default `COHORT_DEDUPE_TTL`.
const DEDUPE_TTL: Duration = Duration::from_secs(24 * 3600);
/// The counter the effect adds to.
const APPLIED: &str = "bench:applied";

/// Records the event id `KEYS[1]` for `ARGV[1]` ms unless it is there already, and only then
/// applies the effect: one more on `KEYS[2]`.
const APPLY_ONCE: &str = r"
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  redis.call('INCR', KEYS[2])
  return 1
end
return 0
";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let nats = async_nats::connect(env_or("BENCH_NATS_URL", "nats://127.0.0.1:4222")).await?;
    let js = jetstream::new(nats);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: STREAM.to_owned(),
            subjects: vec!["bench.evt.>".to_owned()],
            storage: StorageType::File,
            retention: RetentionPolicy::Limits,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::from_secs(7 * 24 * 3600),
            ..Default::default()
        })
        .await?;
    let app = match env_or("BENCH_EVENTS_ROLE", "").as_str() {
        "publish" => Router::new()
            .route("/emit", post(emit))
            .route("/readyz", get(|| async { StatusCode::OK }))
            .with_state(js),
        "consume" => {
            let sink = Arc::new(Sink::connect().await?);
            let consumer = stream
                .get_or_create_consumer(
                    CONSUMER,
                    pull::Config {
                        durable_name: Some(CONSUMER.to_owned()),
                        deliver_policy: DeliverPolicy::New,
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: Duration::from_secs(30),
                        max_deliver: -1,
                        ..Default::default()
                    },
                )
                .await?;
            tokio::spawn(consume(consumer, sink.clone()));
            Router::new()
                .route("/stats", get(stats).delete(reset))
                .with_state(sink)
        }
        other => {
            return Err(
                format!("BENCH_EVENTS_ROLE must be publish or consume, not `{other}`").into(),
            );
        }
    };
    let listener = tokio::net::TcpListener::bind(env_or("BENCH_ADDR", "127.0.0.1:8090")).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn emit(State(js): State<Context>, body: Bytes) -> Response {
    let run: EmitRun = match serde_json::from_slice(&body) {
        Ok(run) => run,
        Err(err) => return json_error(StatusCode::BAD_REQUEST, &format!("bad emit run: {err}")),
    };
    if let Some(why) = run.invalid() {
        return json_error(StatusCode::BAD_REQUEST, why);
    }
    let publish = |tick: Tick| {
        let js = js.clone();
        async move {
            let payload = serde_json::to_vec(&tick)?;
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", nuid::next().as_str());
            js.publish_with_headers(SUBJECT, headers, payload.into())
                .await?
                .await?;
            Ok::<(), BoxError>(())
        }
    };
    match emit_for(run, publish).await {
        Ok(report) => json_response(
            StatusCode::OK,
            serde_json::to_vec(&report).unwrap_or_default(),
        ),
        Err(err) => json_error(StatusCode::BAD_GATEWAY, &format!("publish failed: {err}")),
    }
}

/// The consumer's side: the effect's store (none for the bare ceiling) and what it saw.
struct Sink {
    redis: Option<redis::aio::ConnectionManager>,
    apply_once: redis::Script,
    latencies: Latencies,
}

impl Sink {
    async fn connect() -> Result<Sink, BoxError> {
        let redis = match std::env::var("BENCH_REDIS_URL") {
            Ok(url) if !url.is_empty() => {
                Some(redis::aio::ConnectionManager::new(redis::Client::open(url)?).await?)
            }
            _ => None,
        };
        Ok(Sink {
            redis,
            apply_once: redis::Script::new(APPLY_ONCE),
            latencies: Latencies::new(),
        })
    }

    /// Applies the effect of the event `id`, unless it was applied before.
    async fn apply(&self, id: &str) -> Result<(), BoxError> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let mut redis = redis.clone();
        let ttl = DEDUPE_TTL.as_millis().to_string();
        let _: i64 = self
            .apply_once
            .key(format!("bench:seen:{id}"))
            .key(APPLIED)
            .arg(ttl)
            .invoke_async(&mut redis)
            .await?;
        Ok(())
    }

    async fn applied(&self) -> Result<u64, BoxError> {
        match &self.redis {
            Some(redis) => {
                let mut redis = redis.clone();
                let applied: Option<u64> = redis::cmd("GET")
                    .arg(APPLIED)
                    .query_async(&mut redis)
                    .await?;
                Ok(applied.unwrap_or(0))
            }
            None => Ok(self.latencies.stats(0).processed),
        }
    }
}

/// Pulls events and handles each on its own task, at most [`IN_FLIGHT`] at once.
///
/// async-nats's pull stream can, rarely, stop asking for events while events wait, and report
/// nothing: idle heartbeats turn that silence into a missed heartbeat, and a new stream asks again.
async fn consume(consumer: PullConsumer, sink: Arc<Sink>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(IN_FLIGHT)
            .heartbeat(HEARTBEAT)
            .messages()
            .await
        {
            Ok(messages) => messages,
            Err(err) => {
                eprintln!("events_baseline: cannot pull: {err}");
                std::process::exit(1);
            }
        };
        loop {
            let message = match messages.next().await {
                // The stream ended: the consumer or the connection is gone.
                None => return,
                Some(Ok(message)) => message,
                Some(Err(err)) if err.kind() == MessagesErrorKind::MissingHeartbeat => {
                    eprintln!("events_baseline: the pull went silent; pulling anew");
                    break;
                }
                Some(Err(err)) => {
                    eprintln!("events_baseline: pull error: {err}");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                if let Err(err) = handle(&sink, &message).await {
                    // Not acked: JetStream delivers it again after the ack wait.
                    eprintln!("events_baseline: event not handled: {err}");
                }
                drop(slot);
            });
        }
    }
}

async fn handle(sink: &Sink, message: &jetstream::Message) -> Result<(), BoxError> {
    let tick: Tick = serde_json::from_slice(&message.payload)?;
    let id = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .ok_or("an event without Nats-Msg-Id")?;
    sink.apply(id.as_str()).await?;
    sink.latencies.record(tick.sent_us);
    message.ack().await?;
    Ok(())
}

async fn stats(State(sink): State<Arc<Sink>>) -> Response {
    match sink.applied().await {
        Ok(applied) => json_response(
            StatusCode::OK,
            serde_json::to_vec(&sink.latencies.stats(applied)).unwrap_or_default(),
        ),
        Err(err) => json_error(StatusCode::BAD_GATEWAY, &format!("redis: {err}")),
    }
}

async fn reset(State(sink): State<Arc<Sink>>) -> StatusCode {
    sink.latencies.reset();
    StatusCode::NO_CONTENT
}
