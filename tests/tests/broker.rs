//! The broker contract on both brokers, and the NATS wire protocol as a plain NATS client sees it:
//! no Cohort code on the other side.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use bytes::Bytes;
use cohort::ErrorKind;
use cohort::broker::spi::{
    Broker, Endpoint, EventHandler, Message, Metadata, RequestHandler, StartPosition, Subjects,
    SubscriptionSpec, Work, header,
};
use cohort::broker::{MemoryBroker, NatsBroker};
use cohort::testing::{NatsServer, event, eventually, eventually_ok, lock, run_broker_suite};
use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;

/// The content type of a JSON body.
const JSON: &str = "application/json";

const PATIENCE: Duration = Duration::from_secs(20);

async fn connect(url: &str, instance: &str) -> NatsBroker {
    NatsBroker::connect(url, Subjects::default(), instance)
        .await
        .unwrap_or_else(|e| panic!("connecting to NATS at {url} failed: {e}"))
}

/// A name of its own for each instance a test connects.
fn instance() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("test-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn endpoint(service: &str, command: &str) -> Endpoint {
    let mut endpoint = Endpoint::new(&Subjects::default(), service, 1, command);
    endpoint.description = format!("the `{command}` command");
    endpoint
}

fn spec(service: &str, name: &str, event: &str) -> SubscriptionSpec {
    let mut spec = SubscriptionSpec::new(&Subjects::default(), service, name, event);
    spec.filter_subject = Subjects::default().event(service, event);
    spec.max_attempts = 3;
    spec.backoff = vec![Duration::from_millis(50)];
    spec.ack_wait = Duration::from_secs(2);
    spec
}

fn request_handler<F, Fut>(f: F) -> RequestHandler
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Message> + Send + 'static,
{
    Arc::new(move |msg| f(msg).boxed())
}

/// A handler that replies with the request it got.
fn echo() -> RequestHandler {
    request_handler(|msg: Message| async move { msg })
}

/// A handler that records every event it gets and succeeds.
fn recorder() -> (EventHandler, Arc<Mutex<Vec<Message>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler: EventHandler = Arc::new({
        let seen = seen.clone();
        move |msg| {
            lock(&seen).push(msg);
            async { Ok(()) }.boxed()
        }
    });
    (handler, seen)
}

fn has_event(seen: &Mutex<Vec<Message>>, id: &str) -> bool {
    lock(seen).iter().any(|m| m.meta.message_id() == Some(id))
}

/// Serves `endpoints` on `broker` until the returned work stops.
async fn serve(broker: &NatsBroker, endpoints: Vec<(Endpoint, RequestHandler)>) -> Work {
    let work = Work::default();
    broker.serve(endpoints, &work).await.expect("serve");
    work
}

/// Subscribes `handler` on `broker` until the returned work stops; `what` names the step in a
/// failure message.
async fn subscribe(
    broker: &NatsBroker,
    spec: SubscriptionSpec,
    handler: EventHandler,
    what: &str,
) -> Work {
    let work = Work::default();
    broker.subscribe(spec, handler, &work).await.expect(what);
    work
}

/// A plain NATS client of `server`: no Cohort code in between.
async fn plain_client(server: &NatsServer) -> async_nats::Client {
    async_nats::connect(server.url())
        .await
        .expect("a plain client")
}

async fn stop(work: &Work) {
    work.stop.cancel();
    work.tasks.close();
    tokio::time::timeout(PATIENCE, work.tasks.wait())
        .await
        .expect("the broker's tasks must finish once the work stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_broker_passes_the_suite() {
    let broker = MemoryBroker::new();
    run_broker_suite(|| {
        let broker = broker.clone();
        async move { Arc::new(broker) as Arc<dyn Broker> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_broker_passes_the_suite() {
    let server = NatsServer::start().await;
    let url = server.url();
    run_broker_suite(|| {
        let url = url.clone();
        async move { Arc::new(connect(&url, &instance()).await) as Arc<dyn Broker> }
    })
    .await;
}

#[tokio::test]
async fn unreachable_nats_is_a_clear_error_at_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let started = Instant::now();
    let err = NatsBroker::connect(&url, Subjects::default(), "lonely")
        .await
        .expect_err("connecting to a port nobody listens on must fail");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.message().contains(&url),
        "the error must name the URL: {err}"
    );
    assert!(
        err.message().contains("COHORT_NATS_URL"),
        "the error must name the setting: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_plain_nats_client_calls_a_command() {
    let server = NatsServer::start().await;
    let broker = connect(&server.url(), &instance()).await;
    let place = endpoint("orders", "place");
    let subject = place.subject.clone();
    let handler = request_handler(|msg: Message| async move {
        let input: serde_json::Value = serde_json::from_slice(&msg.payload).expect("a JSON body");
        let by = msg.meta.header(header::PRINCIPAL);
        let output = serde_json::json!({ "placed": input["sku"], "by": by });
        Message {
            meta: Box::new(Metadata::from_headers([
                (header::STATUS, "201"),
                (header::CONTENT_TYPE, JSON),
            ])),
            payload: Bytes::from(output.to_string()),
        }
    });
    let work = serve(&broker, vec![(place, handler)]).await;

    let plain = plain_client(&server).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(header::PRINCIPAL, "bob");
    let reply = plain
        .request_with_headers(
            subject.clone(),
            headers,
            Bytes::from_static(br#"{"sku":"tea"}"#),
        )
        .await
        .unwrap_or_else(|e| panic!("a plain request to `{subject}` failed: {e}"));
    let reply_headers = reply.headers.expect("the reply carries headers");
    assert_eq!(
        reply_headers.get(header::STATUS).map(|v| v.as_str()),
        Some("201")
    );
    assert_eq!(
        reply_headers.get(header::CONTENT_TYPE).map(|v| v.as_str()),
        Some(JSON)
    );
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).expect("a JSON reply");
    assert_eq!(body, serde_json::json!({ "placed": "tea", "by": "bob" }));
    stop(&work).await;
}

#[tokio::test]
async fn a_plain_jetstream_publish_reaches_a_subscription() {
    let server = NatsServer::start().await;
    let broker = connect(&server.url(), &instance()).await;
    let (handler, seen) = recorder();
    let mut spec = spec("audit", "all_y", "y");
    spec.filter_subject = "cohort.evt.x.y".to_owned();
    let work = subscribe(&broker, spec, handler, "subscribe").await;

    let plain = async_nats::jetstream::new(plain_client(&server).await);
    plain
        .publish(
            "cohort.evt.x.y",
            Bytes::from_static(br#"{"from":"elsewhere"}"#),
        )
        .await
        .expect("publish")
        .await
        .expect("JetStream stores the event");
    eventually(
        "the subscription must receive the plain client's event",
        PATIENCE,
        async || !lock(&seen).is_empty(),
    )
    .await;
    assert_eq!(lock(&seen)[0].payload.as_ref(), br#"{"from":"elsewhere"}"#);
    stop(&work).await;
}

#[tokio::test]
async fn commands_are_announced_with_the_micro_protocol() {
    let server = NatsServer::start().await;
    let broker = connect(&server.url(), &instance()).await;
    let mut list = endpoint("catalog", "list");
    list.metadata = HashMap::from([
        ("input_schema".to_owned(), r#"{"type":"object"}"#.to_owned()),
        ("output_schema".to_owned(), r#"{"type":"array"}"#.to_owned()),
    ]);
    let get = endpoint("catalog", "get");
    let work = serve(&broker, vec![(list.clone(), echo()), (get.clone(), echo())]).await;

    let plain = plain_client(&server).await;
    let ping = plain
        .request("$SRV.PING.catalog", Bytes::new())
        .await
        .expect("the service answers $SRV.PING.catalog");
    let ping: serde_json::Value = serde_json::from_slice(&ping.payload).expect("JSON");
    assert_eq!(ping["name"], "catalog");
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");

    let info = plain
        .request("$SRV.INFO.catalog", Bytes::new())
        .await
        .expect("the service answers $SRV.INFO.catalog");
    let info: serde_json::Value = serde_json::from_slice(&info.payload).expect("JSON");
    let endpoints = info["endpoints"].as_array().expect("an endpoints list");
    let listed = endpoints
        .iter()
        .find(|e| e["name"] == "list")
        .unwrap_or_else(|| panic!("`list` is announced: {info}"));
    assert_eq!(listed["subject"], list.subject.as_str());
    assert_eq!(listed["queue_group"], list.queue_group.as_str());
    assert_eq!(listed["metadata"]["input_schema"], r#"{"type":"object"}"#);
    assert_eq!(listed["metadata"]["output_schema"], r#"{"type":"array"}"#);
    assert!(
        endpoints
            .iter()
            .any(|e| e["subject"] == get.subject.as_str()),
        "`get` is announced: {info}"
    );

    // Two calls of `list`, one of them answered with an error status: both counted.
    plain
        .request(list.subject.clone(), Bytes::from_static(b"{}"))
        .await
        .expect("list answers");
    let mut failing = async_nats::HeaderMap::new();
    failing.insert(header::STATUS, "409");
    let request = async_nats::Request::new()
        .headers(failing)
        .payload(Bytes::from_static(
            br#"{"title":"taken","status":409,"detail":"the name is taken"}"#,
        ));
    plain
        .send_request(list.subject.clone(), request)
        .await
        .expect("list answers");
    let stats = plain
        .request("$SRV.STATS.catalog", Bytes::new())
        .await
        .expect("the service answers $SRV.STATS.catalog");
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).expect("JSON");
    assert_eq!(stats["name"], "catalog");
    assert_eq!(stats["type"], "io.nats.micro.v1.stats_response");
    let counted = stats["endpoints"]
        .as_array()
        .and_then(|endpoints| endpoints.iter().find(|e| e["name"] == "list"))
        .unwrap_or_else(|| panic!("`list` has stats: {stats}"));
    assert_eq!(counted["num_requests"], 2, "{stats}");
    assert_eq!(counted["num_errors"], 1, "{stats}");
    assert!(
        counted["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("409:")),
        "the last error names its status: {stats}"
    );

    stop(&work).await;
    let gone = plain.request("$SRV.PING.catalog", Bytes::new()).await;
    assert!(
        gone.is_err(),
        "a stopped service no longer answers $SRV.PING"
    );
}

#[tokio::test]
async fn an_exhausted_event_is_dead_lettered_with_its_error() {
    let server = NatsServer::start().await;
    let broker = connect(&server.url(), &instance()).await;
    let spec = spec("shipping", "label", "packed");
    let plain = plain_client(&server).await;
    let mut letters = plain
        .subscribe(spec.dead_letter_subject.clone())
        .await
        .expect("subscribe to the dead letters");
    plain.flush().await.expect("flush");

    let handler: EventHandler =
        Arc::new(|_msg| async { Err(cohort::Error::conflict("out of stock\r\nfor good")) }.boxed());
    let work = subscribe(&broker, spec.clone(), handler, "subscribe").await;
    let subject = Subjects::default().event("shipping", "packed");
    broker
        .publish(&subject, event("parcel-7", r#"{"parcel":7}"#))
        .await
        .expect("publish");

    let letter = tokio::time::timeout(PATIENCE, letters.next())
        .await
        .expect("the event must be dead-lettered after max_attempts")
        .expect("a dead letter");
    let headers = letter.headers.expect("the dead letter carries headers");
    let error = headers
        .get(header::ERROR)
        .expect("a Cohort-Error header")
        .as_str();
    assert!(
        error.contains("out of stock"),
        "Cohort-Error names the error: {error}"
    );
    assert_eq!(
        headers.get(header::MESSAGE_ID).map(|v| v.as_str()),
        Some("parcel-7")
    );
    assert_eq!(letter.payload.as_ref(), br#"{"parcel":7}"#);

    let js = async_nats::jetstream::new(plain);
    let mut stream = js
        .get_stream(Subjects::default().dead_letter_stream())
        .await
        .expect("the DLQ stream");
    assert_eq!(
        stream.info().await.expect("stream info").state.messages,
        1,
        "the DLQ stream keeps the letter"
    );
    stop(&work).await;
}

#[tokio::test]
async fn a_crashed_instance_events_go_to_another_after_the_ack_wait() {
    let server = NatsServer::start().await;
    let (a, b) = (
        connect(&server.url(), "crashing").await,
        connect(&server.url(), "surviving").await,
    );
    let spec = spec("billing", "invoice", "ordered");
    let started = Arc::new(Mutex::new(Vec::<Message>::new()));
    let hangs: EventHandler = Arc::new({
        let started = started.clone();
        move |msg| {
            lock(&started).push(msg);
            futures_util::future::pending().boxed()
        }
    });
    let _work_a = subscribe(&a, spec.clone(), hangs, "subscribe on A").await;
    a.publish(
        &Subjects::default().event("billing", "ordered"),
        event("order-1", "{}"),
    )
    .await
    .expect("publish");
    eventually("instance A must take the event", PATIENCE, async || {
        !lock(&started).is_empty()
    })
    .await;

    // The crash: A's connection goes away while its handler holds the event unacknowledged.
    a.client().drain().await.expect("close A's connection");
    let (handler, seen) = recorder();
    let work_b = subscribe(&b, spec, handler, "subscribe on B").await;
    let crashed_at = Instant::now();
    eventually(
        "the crashed instance's event must be delivered to another instance",
        PATIENCE,
        async || has_event(&seen, "order-1"),
    )
    .await;
    assert!(
        crashed_at.elapsed() >= Duration::from_millis(500),
        "the event came back before its ack wait"
    );
    stop(&work_b).await;
}

#[tokio::test]
async fn every_instance_consumers_belong_to_their_instance() {
    let server = NatsServer::start().await;
    let broker = connect(&server.url(), "host-1").await;
    let (handler, _seen) = recorder();
    let mut spec = spec("cache", "evict", "changed");
    spec.every_instance = true;
    let work = subscribe(&broker, spec, handler, "subscribe").await;

    let js = async_nats::jetstream::new(plain_client(&server).await);
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream("cache__evict__host-1", Subjects::default().events_stream())
        .await
        .expect("the instance's own consumer");
    let config = &consumer.cached_info().config;
    assert!(
        !config.inactive_threshold.is_zero(),
        "an instance's consumer is removed once the instance is gone"
    );
    assert_eq!(config.filter_subject, "cohort.evt.cache.changed");
    stop(&work).await;
}

#[tokio::test]
async fn a_last_n_consumer_starts_at_its_nth_event_and_leaves_no_probe_behind() {
    let server = NatsServer::start().await;
    let broker = connect(&server.url(), "host-1").await;
    let subjects = Subjects::default();
    // Sequences 1..=10: `changed` at the odd ones, another event at the even ones.
    for i in 1..=5 {
        for (event_name, id) in [("changed", format!("c{i}")), ("other", format!("o{i}"))] {
            broker
                .publish(&subjects.event("cache", event_name), event(&id, "{}"))
                .await
                .expect("publish");
        }
    }
    let (handler, seen) = recorder();
    let mut spec = spec("cache", "evict", "changed");
    spec.every_instance = true;
    spec.start = StartPosition::Last(2);
    let work = subscribe(&broker, spec, handler, "subscribe").await;

    let js = async_nats::jetstream::new(plain_client(&server).await);
    let stream = js
        .get_stream(subjects.events_stream())
        .await
        .expect("the events stream");
    let names: Vec<String> = stream
        .consumer_names()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(|name| name.expect("a consumer name"))
        .collect();
    assert_eq!(names, ["cache__evict__host-1"], "no probe consumer is left");
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer("cache__evict__host-1")
        .await
        .expect("the instance's own consumer");
    assert_eq!(
        consumer.cached_info().config.deliver_policy,
        DeliverPolicy::ByStartSequence { start_sequence: 7 },
        "the last 2 `changed` events are at sequences 7 and 9"
    );
    eventually("the last 2 events are replayed", PATIENCE, async || {
        lock(&seen).len() == 2
    })
    .await;
    let mut ids: Vec<_> = lock(&seen)
        .iter()
        .filter_map(|m| m.meta.message_id().map(str::to_owned))
        .collect();
    ids.sort();
    assert_eq!(ids, ["c4", "c5"]);
    stop(&work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_loses_no_stored_event() {
    let mut server = NatsServer::start().await;
    let broker = connect(&server.url(), &instance()).await;
    let subjects = Subjects::default();

    let echo_endpoint = endpoint("ledger", "echo");
    let work = serve(&broker, vec![(echo_endpoint.clone(), echo())]).await;
    // A subscription that keeps running through the restart.
    let (running, seen_running) = recorder();
    broker
        .subscribe(spec("ledger", "running", "posted"), running, &work)
        .await
        .expect("subscribe");
    // A subscription with no instance pulling during the restart: its events wait on the server.
    let parked_spec = spec("ledger", "parked", "parked");
    let (parked, _) = recorder();
    let parked_work = subscribe(&broker, parked_spec.clone(), parked, "subscribe").await;
    stop(&parked_work).await;

    broker
        .publish(&subjects.event("ledger", "posted"), event("before", "{}"))
        .await
        .expect("publish before the restart");
    eventually(
        "an event published before the restart is delivered",
        PATIENCE,
        async || has_event(&seen_running, "before"),
    )
    .await;
    broker
        .publish(&subjects.event("ledger", "parked"), event("waiting", "{}"))
        .await
        .expect("publish before the restart");

    server.restart().await;

    eventually_ok("a request after the NATS restart", PATIENCE, || {
        broker.request(
            &echo_endpoint.subject,
            Message::new(Bytes::from_static(b"{}")),
            Duration::from_secs(2),
        )
    })
    .await;
    assert!(
        broker.is_ready(),
        "the broker is ready again once reconnected"
    );
    let posted = subjects.event("ledger", "posted");
    eventually_ok("a publish after the NATS restart", PATIENCE, || {
        broker.publish(&posted, event("after", "{}"))
    })
    .await;
    eventually(
        "the running subscription resumes after the restart",
        PATIENCE,
        async || has_event(&seen_running, "after"),
    )
    .await;

    let (resumed, seen_resumed) = recorder();
    let resumed_work = subscribe(
        &broker,
        parked_spec,
        resumed,
        "subscribe again after the restart",
    )
    .await;
    eventually(
        "an event stored before the restart is delivered after it",
        PATIENCE,
        async || has_event(&seen_resumed, "waiting"),
    )
    .await;
    stop(&resumed_work).await;
    stop(&work).await;
}

#[tokio::test]
async fn a_publish_no_stream_takes_fails_at_once_and_the_stream_is_made_again() {
    let server = NatsServer::start().await;
    let broker = connect(&server.url(), &instance()).await;
    let subjects = Subjects::default();
    let plain = async_nats::connect(server.url()).await.expect("connect");
    async_nats::jetstream::new(plain)
        .delete_stream(subjects.events_stream())
        .await
        .expect("delete the events stream");

    let posted = subjects.event("ledger", "posted");
    let started = Instant::now();
    let refused = broker.publish(&posted, event("unstored", "{}")).await;
    let Err(err) = refused else {
        panic!("no stream takes the event, yet its publish succeeded")
    };
    assert_eq!(err.code(), "broker_unavailable", "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a publish no stream takes fails at once, not after {:?}",
        started.elapsed()
    );
    eventually_ok("a publish once the stream is made again", PATIENCE, || {
        broker.publish(&posted, event("stored", "{}"))
    })
    .await;
}

#[tokio::test]
async fn a_stopped_instance_leaves_new_events_to_the_others() {
    let server = NatsServer::start().await;
    let (a, b) = (
        connect(&server.url(), "leaving").await,
        connect(&server.url(), "staying").await,
    );
    // So long that an event stuck with the stopped instance would fail the test.
    let mut spec = spec("search", "index", "updated");
    spec.ack_wait = Duration::from_secs(60);
    let (on_a, seen_a) = recorder();
    let (on_b, seen_b) = recorder();
    let work_a = subscribe(&a, spec.clone(), on_a, "subscribe on A").await;
    let work_b = subscribe(&b, spec, on_b, "subscribe on B").await;
    stop(&work_a).await;

    let subject = Subjects::default().event("search", "updated");
    for i in 0..20 {
        b.publish(&subject, event(&format!("update-{i}"), "{}"))
            .await
            .expect("publish");
    }
    eventually(
        "events published after an instance stopped must all go to the others at once",
        Duration::from_secs(10),
        async || lock(&seen_b).len() == 20,
    )
    .await;
    assert!(
        lock(&seen_a).is_empty(),
        "a stopped instance takes no events"
    );
    stop(&work_b).await;
}

#[tokio::test]
async fn a_command_handler_that_panics_does_not_stop_its_endpoint() {
    let server = NatsServer::start().await;
    let broker = connect(&server.url(), &instance()).await;
    let fragile = endpoint("fragile", "parse");
    let handler = request_handler(|msg: Message| {
        assert!(
            msg.payload.as_ref() != b"\"boom\"",
            "the handler chokes on boom"
        );
        async move { msg }
    });
    let work = serve(&broker, vec![(fragile.clone(), handler)]).await;
    let boom = broker
        .request(
            &fragile.subject,
            Message::new(Bytes::from_static(b"\"boom\"")),
            Duration::from_millis(300),
        )
        .await;
    assert!(
        boom.is_err(),
        "a request whose handler panicked gets no answer"
    );
    let fine = broker
        .request(
            &fragile.subject,
            Message::new(Bytes::from_static(b"\"fine\"")),
            PATIENCE,
        )
        .await
        .expect("the endpoint still answers after a handler panicked");
    assert_eq!(fine.payload.as_ref(), b"\"fine\"");
    stop(&work).await;
}

/// A handler that marks `started` when its command arrives and never answers: a command in flight
/// for as long as the test needs.
fn hangs(started: Arc<AtomicBool>) -> RequestHandler {
    request_handler(move |_msg: Message| {
        started.store(true, Ordering::SeqCst);
        futures_util::future::pending()
    })
}

/// A plain client of `server` that sees every reply subject, and so the progress messages that
/// go to Cohort's callers.
async fn spy_on_replies(server: &NatsServer) -> async_nats::Subscriber {
    let plain = plain_client(server).await;
    let spy = plain.subscribe("_INBOX.>").await.expect("subscribe");
    plain.flush().await.expect("flush");
    spy
}

/// The `Cohort-Status` of a message, if it has one.
fn status_of(message: &async_nats::Message) -> Option<&str> {
    let headers = message.headers.as_ref()?;
    headers.get(header::STATUS).map(|value| value.as_str())
}

/// Waits for the next progress message that `spy` sees.
async fn next_progress(spy: &mut async_nats::Subscriber) -> async_nats::Message {
    let progress = async {
        while let Some(message) = spy.next().await {
            if status_of(&message) == Some("100") {
                return message;
            }
        }
        panic!("the spy's subscription ended");
    };
    tokio::time::timeout(PATIENCE, progress)
        .await
        .expect("the instance running the command must send progress")
}

#[tokio::test]
async fn a_caller_learns_within_3_s_that_the_instance_running_its_command_is_gone() {
    let server = NatsServer::start().await;
    let caller = connect(&server.url(), "caller").await;
    let doomed = connect(&server.url(), "doomed").await;
    let vault = endpoint("vault", "open");
    let started = Arc::new(AtomicBool::new(false));
    let _work = serve(&doomed, vec![(vault.clone(), hangs(started.clone()))]).await;
    let mut spy = spy_on_replies(&server).await;

    let waiting = tokio::spawn(async move {
        let msg = Message::new(Bytes::from_static(b"{}"));
        caller
            .request(&vault.subject, msg, Duration::from_secs(30))
            .await
    });
    let progress = next_progress(&mut spy).await;
    assert!(
        started.load(Ordering::SeqCst),
        "progress comes from the running command"
    );
    let sent_by = progress
        .headers
        .as_ref()
        .and_then(|h| h.get(header::INSTANCE));
    assert_eq!(sent_by.map(|v| v.as_str()), Some("doomed"));
    // The loss: the connection of the instance running the command goes away.
    doomed
        .client()
        .drain()
        .await
        .expect("close doomed's connection");
    let lost_at = Instant::now();
    let err = waiting
        .await
        .expect("the request task")
        .expect_err("a command whose instance is gone gets no reply");
    assert!(
        lost_at.elapsed() < Duration::from_secs(3),
        "the caller must learn it within 3 s, not after {:?}",
        lost_at.elapsed()
    );
    assert_eq!(
        (err.kind(), err.code()),
        (ErrorKind::Unavailable, "executor_lost"),
        "{err}"
    );
    // The client reads what happened; the log gets which command and why.
    assert!(
        err.message()
            .starts_with("the instance running the command was lost"),
        "{err}"
    );
    let cause = err.cause().unwrap_or_default();
    assert!(cause.contains("`cohort.cmd.vault.v1.open`"), "{err}");
}

#[tokio::test]
async fn a_caller_whose_nats_connection_drops_learns_it_within_3_s() {
    let mut server = NatsServer::start().await;
    let caller = connect(&server.url(), "caller").await;
    let executor = connect(&server.url(), "executor").await;
    let vault = endpoint("vault", "open");
    let ping = endpoint("vault", "ping");
    let started = Arc::new(AtomicBool::new(false));
    let endpoints = vec![
        (vault.clone(), hangs(started.clone())),
        (ping.clone(), echo()),
    ];
    let _work = serve(&executor, endpoints).await;

    let waiting = tokio::spawn({
        let caller = caller.clone();
        async move {
            let msg = Message::new(Bytes::from_static(b"{}"));
            caller
                .request(&vault.subject, msg, Duration::from_secs(30))
                .await
        }
    });
    let running = "the command must be running before NATS goes away";
    eventually(running, PATIENCE, async || started.load(Ordering::SeqCst)).await;
    server.stop().await;
    let dropped_at = Instant::now();
    let err = waiting
        .await
        .expect("the request task")
        .expect_err("a caller without a connection gets no reply");
    assert!(
        dropped_at.elapsed() < Duration::from_secs(3),
        "the caller must learn it within 3 s, not after {:?}",
        dropped_at.elapsed()
    );
    assert_eq!(
        (err.kind(), err.code()),
        (ErrorKind::Unavailable, "executor_lost"),
        "{err}"
    );

    server.restart().await;
    eventually_ok("a request once NATS is back", PATIENCE, || {
        let msg = Message::new(Bytes::from_static(b"{}"));
        caller.request(&ping.subject, msg, Duration::from_secs(2))
    })
    .await;
}

/// Sends `{}` to `subject` from the plain client `plain` with the reply subject `reply_to`, and
/// returns every message that comes back up to the reply (the first that is not progress).
/// Checks that nothing follows the reply.
async fn plain_request(
    plain: &async_nats::Client,
    subject: &str,
    reply_to: String,
) -> Vec<async_nats::Message> {
    let mut inbox = plain.subscribe(reply_to.clone()).await.expect("subscribe");
    plain
        .publish_with_reply(
            subject.to_owned(),
            reply_to.clone(),
            Bytes::from_static(b"{}"),
        )
        .await
        .expect("publish the request");
    let mut next = async || {
        tokio::time::timeout(PATIENCE, inbox.next())
            .await
            .expect("a message on the reply subject")
            .expect("the reply subscription is open")
    };
    let mut messages = vec![next().await];
    while messages.last().and_then(status_of) == Some("100") {
        messages.push(next().await);
    }
    // A marker sent after the reply is the next message: nothing else came in between.
    plain
        .publish(reply_to, Bytes::from_static(b"marker"))
        .await
        .expect("publish the marker");
    assert_eq!(
        next().await.payload.as_ref(),
        b"marker",
        "nothing may follow the reply"
    );
    messages
}

/// Long enough for two progress messages, a second from each other.
const TWO_PROGRESS_MESSAGES: Duration = Duration::from_millis(2500);

#[tokio::test]
async fn a_plain_client_gets_progress_only_when_it_asks() {
    let server = NatsServer::start().await;
    let broker = connect(&server.url(), "worker").await;
    let report = endpoint("reports", "build");
    let slow = request_handler(|msg: Message| async move {
        tokio::time::sleep(TWO_PROGRESS_MESSAGES).await;
        Message {
            meta: Box::new(Metadata::from_headers([(header::STATUS, "200")])),
            payload: msg.payload,
        }
    });
    let work = serve(&broker, vec![(report.clone(), slow)]).await;
    let plain = plain_client(&server).await;

    let without = plain_request(&plain, &report.subject, plain.new_inbox()).await;
    assert_eq!(
        without.len(),
        1,
        "a request that does not ask gets the reply alone"
    );
    assert_eq!(without[0].payload.as_ref(), b"{}");
    assert_eq!(status_of(&without[0]), Some("200"));

    // A reply subject whose last token is `cohort-progress` asks for progress.
    let asking = format!("{}.1.cohort-progress", plain.new_inbox());
    let with = plain_request(&plain, &report.subject, asking).await;
    let statuses: Vec<_> = with.iter().map(status_of).collect();
    assert_eq!(
        statuses,
        [Some("100"), Some("100"), Some("200")],
        "a request that asks gets a progress message a second from the command's first wait, \
         then one every second, then the reply"
    );
    for progress in &with[..2] {
        assert!(progress.payload.is_empty(), "progress has no body");
        let sent_by = progress
            .headers
            .as_ref()
            .and_then(|h| h.get(header::INSTANCE));
        assert_eq!(sent_by.map(|v| v.as_str()), Some("worker"));
    }
    assert_eq!(with[2].payload.as_ref(), b"{}");
    stop(&work).await;
}
