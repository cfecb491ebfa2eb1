//! The conformance suite of [`Broker`]: what every broker must do, so that an app behaves the same
//! on the embedded broker in development and on NATS in production.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::time::{Instant, sleep};

use crate::broker::{Broker, Endpoint, EventHandler, RequestHandler, SubscriptionSpec, Work};
use crate::error::{Error, ErrorKind};
use crate::message::{self, JSON, Message, Metadata, PROBLEM_JSON, Subjects};

/// How long a reply or an event may take in the suite before it counts as lost. Generous: the
/// suite checks what happens, not how fast.
const PATIENCE: Duration = Duration::from_secs(15);
/// How long the suite waits for something that must NOT happen (a duplicate, an extra attempt).
const QUIET: Duration = Duration::from_millis(1500);
/// Ack wait of the suite's subscriptions: longer than any handler in it, short enough that an
/// unacknowledged event would come back (and fail a check) within the suite's waits.
const ACK_WAIT: Duration = Duration::from_secs(1);
const BACKOFF: Duration = Duration::from_millis(50);
/// More events than an instance handles at once, so that some are still waiting when it stops.
const HANDOVER_EVENTS: usize = 100;

/// Runs the conformance suite, panicking with a message that names the first contract broken.
///
/// Each call of `make` returns the broker handle of a new instance of the same deployment: clones
/// of one `MemoryBroker`, or new connections to the same NATS servers. The brokers must use the
/// default subject prefix (`cohort`); every run uses its own service names, so runs may share a
/// server. The suite takes about ten seconds.
///
/// ```no_run
/// # async fn demo() {
/// use std::sync::Arc;
/// use cohort::broker::{Broker, MemoryBroker};
///
/// let broker = MemoryBroker::new();
/// cohort::testing::run_broker_suite(|| {
///     let broker = broker.clone();
///     async move { Arc::new(broker) as Arc<dyn Broker> }
/// })
/// .await;
/// # }
/// ```
pub async fn run_broker_suite<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let run = Run::new();
    request_reply_round_trip(&make, &run).await;
    no_responders_fail_fast(&make, &run).await;
    slow_handler_times_out(&make, &run).await;
    requests_run_concurrently(&make, &run).await;
    requests_spread_over_instances_and_avoid_stopped_ones(&make, &run).await;
    each_event_reaches_one_instance(&make, &run).await;
    failed_event_is_redelivered(&make, &run).await;
    failing_event_stops_after_max_attempts(&make, &run).await;
    stopping_an_instance_loses_no_event(&make, &run).await;
    every_instance_subscription_reaches_each_instance(&make, &run).await;
}

/// Names no other run uses.
struct Run {
    subjects: Subjects,
    token: String,
}

impl Run {
    fn new() -> Self {
        Run {
            subjects: Subjects::default(),
            token: message::random_hex(4),
        }
    }

    /// A service name of this run.
    fn service(&self, name: &str) -> String {
        format!("suite_{}_{name}", self.token)
    }

    fn endpoint(&self, service: &str, command: &str) -> Endpoint {
        Endpoint {
            service: service.to_owned(),
            version: 1,
            name: command.to_owned(),
            description: format!("conformance suite command `{command}`"),
            subject: self.subjects.command(service, 1, command),
            queue_group: self.subjects.queue_group(service, 1, command),
            metadata: HashMap::new(),
        }
    }

    /// A subscription to `event` of `service`.
    fn spec(&self, service: &str, name: &str, event: &str, max_attempts: u32) -> SubscriptionSpec {
        SubscriptionSpec {
            service: service.to_owned(),
            name: name.to_owned(),
            filter_subject: self.subjects.event(service, event),
            durable: Subjects::durable(service, name),
            every_instance: false,
            max_attempts,
            backoff: vec![BACKOFF],
            ack_wait: ACK_WAIT,
            dead_letter_subject: self.subjects.dead_letter(service, name),
        }
    }
}

fn request_handler<F, Fut>(f: F) -> RequestHandler
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Message> + Send + 'static,
{
    Arc::new(move |msg| f(msg).boxed())
}

fn event_handler<F, Fut>(f: F) -> EventHandler
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    Arc::new(move |msg| f(msg).boxed())
}

/// An event with a message id, as the runtime publishes it.
fn event(id: &str, body: &str) -> Message {
    Message {
        meta: Metadata {
            message_id: Some(id.to_owned()),
            content_type: Some(JSON.to_owned()),
            ..Metadata::default()
        },
        payload: Bytes::from(body.to_owned()),
    }
}

async fn stop(work: &Work, what: &str) {
    work.stop.cancel();
    work.tasks.close();
    if tokio::time::timeout(PATIENCE, work.tasks.wait())
        .await
        .is_err()
    {
        panic!(
            "{what}: the broker's tasks did not finish within {PATIENCE:?} of stopping the work"
        );
    }
}

/// Polls `done` until it holds, panicking with `what` after `within`.
async fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !done() {
        if Instant::now() >= until {
            panic!("{what} (waited {within:?})");
        }
        sleep(Duration::from_millis(20)).await;
    }
}

async fn request_reply_round_trip<F, Fut>(make: &F, run: &Run)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (server, client) = (make().await, make().await);
    let service = run.service("echo");
    let endpoint = run.endpoint(&service, "echo");
    let subject = endpoint.subject.clone();
    let seen = Arc::new(Mutex::new(None::<Message>));
    let handler = request_handler({
        let seen = seen.clone();
        move |msg: Message| {
            let seen = seen.clone();
            async move {
                let conflict = msg.payload.as_ref() == b"\"conflict\"";
                *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg.clone());
                if conflict {
                    let err = Error::conflict("taken").with_code("taken");
                    return Message {
                        meta: Metadata {
                            status: Some(err.status()),
                            content_type: Some(PROBLEM_JSON.to_owned()),
                            ..Metadata::default()
                        },
                        payload: Bytes::from(err.to_problem_json()),
                    };
                }
                Message {
                    meta: Metadata {
                        status: Some(201),
                        content_type: Some(JSON.to_owned()),
                        session_set: Some("session-2".to_owned()),
                        instance: Some("server".to_owned()),
                        ..Metadata::default()
                    },
                    payload: msg.payload,
                }
            }
        }
    });
    let work = Work::default();
    server
        .serve(vec![(endpoint, handler)], &work)
        .await
        .unwrap_or_else(|e| panic!("serving `{subject}` failed: {e}"));

    let sent = Metadata {
        message_id: Some(message::random_hex(8)),
        traceparent: Some(message::new_traceparent()),
        principal: Some("alice".to_owned()),
        tenant: Some("acme".to_owned()),
        session: Some("session-1".to_owned()),
        deadline: Some(message::unix_millis(std::time::SystemTime::now()) + 30_000),
        instance: Some("client".to_owned()),
        service: Some("caller".to_owned()),
        content_type: Some(JSON.to_owned()),
        ..Metadata::default()
    };
    let body = Bytes::from_static(br#"{"n":1,"s":"h\u00e9"}"#);
    let request = Message {
        meta: sent.clone(),
        payload: body.clone(),
    };
    let reply = client
        .request(&subject, request, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("request to `{subject}` failed: {e}"));
    let received = seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_else(|| panic!("a reply came back, but the handler of `{subject}` never ran"));
    assert_eq!(
        received.meta, sent,
        "the handler must see every metadata header the caller sent"
    );
    assert_eq!(
        received.payload, body,
        "the handler must see the request body unchanged"
    );
    assert_eq!(
        reply.status(),
        201,
        "the reply must carry the handler's status"
    );
    assert_eq!(
        reply.payload, body,
        "the reply must carry the handler's body unchanged"
    );
    assert_eq!(
        reply.meta.content_type.as_deref(),
        Some(JSON),
        "the reply must keep its content type"
    );
    assert_eq!(
        reply.meta.session_set.as_deref(),
        Some("session-2"),
        "the reply must keep its session header"
    );
    assert_eq!(
        reply.meta.instance.as_deref(),
        Some("server"),
        "the reply must keep its instance header"
    );

    let reply = client
        .request(
            &subject,
            Message::new(Bytes::from_static(b"\"conflict\"")),
            PATIENCE,
        )
        .await
        .unwrap_or_else(|e| panic!("request to `{subject}` failed: {e}"));
    assert_eq!(reply.status(), 409, "an error reply must carry its status");
    assert_eq!(reply.meta.content_type.as_deref(), Some(PROBLEM_JSON));
    let err = Error::from_problem_json(reply.status(), &reply.payload);
    assert_eq!(
        (err.kind(), err.code()),
        (ErrorKind::Conflict, "taken"),
        "an error reply must carry its problem body"
    );
    stop(&work, "request/reply").await;
}

async fn no_responders_fail_fast<F, Fut>(make: &F, run: &Run)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let client = make().await;
    let subject = run.endpoint(&run.service("nobody"), "nothing").subject;
    let started = Instant::now();
    let err = client
        .request(&subject, Message::new(Bytes::from_static(b"{}")), PATIENCE)
        .await
        .expect_err("a request nobody serves must fail");
    assert_eq!(
        err.kind(),
        ErrorKind::NoResponders,
        "a request nobody serves must fail with NoResponders, not: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a request nobody serves must fail at once, not after {:?}",
        started.elapsed()
    );
    assert!(
        err.message().contains(&subject),
        "the error must name the subject: {err}"
    );
}

async fn slow_handler_times_out<F, Fut>(make: &F, run: &Run)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (server, client) = (make().await, make().await);
    let endpoint = run.endpoint(&run.service("slow"), "slow");
    let subject = endpoint.subject.clone();
    let handler = request_handler(|msg: Message| async move {
        sleep(Duration::from_millis(1500)).await;
        msg
    });
    let work = Work::default();
    server
        .serve(vec![(endpoint, handler)], &work)
        .await
        .unwrap_or_else(|e| panic!("serving `{subject}` failed: {e}"));
    let started = Instant::now();
    let err = client
        .request(
            &subject,
            Message::new(Bytes::from_static(b"{}")),
            Duration::from_millis(200),
        )
        .await
        .expect_err("a handler slower than the timeout must fail the request");
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout,
        "a handler slower than the timeout must fail with Timeout, not: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "the request must fail when its timeout passes, not after {:?}",
        started.elapsed()
    );
    stop(&work, "slow handler").await;
}

async fn requests_run_concurrently<F, Fut>(make: &F, run: &Run)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (server, client) = (make().await, make().await);
    let endpoint = run.endpoint(&run.service("parallel"), "wait");
    let subject = endpoint.subject.clone();
    let handler = request_handler(|msg: Message| async move {
        sleep(Duration::from_millis(500)).await;
        msg
    });
    let work = Work::default();
    server
        .serve(vec![(endpoint, handler)], &work)
        .await
        .unwrap_or_else(|e| panic!("serving `{subject}` failed: {e}"));
    let started = Instant::now();
    let requests = (0..10).map(|i| {
        let (client, subject) = (client.clone(), subject.clone());
        async move {
            client
                .request(&subject, Message::new(format!("{{\"i\":{i}}}")), PATIENCE)
                .await
                .unwrap_or_else(|e| panic!("request {i} to `{subject}` failed: {e}"))
        }
    });
    futures_util::future::join_all(requests).await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "10 requests to a handler that waits 500 ms must run at once on one instance, not one \
         after another (took {:?})",
        started.elapsed()
    );
    stop(&work, "concurrent requests").await;
}

async fn requests_spread_over_instances_and_avoid_stopped_ones<F, Fut>(make: &F, run: &Run)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (a, b, client) = (make().await, make().await, make().await);
    let endpoint = run.endpoint(&run.service("spread"), "work");
    let subject = endpoint.subject.clone();
    let served = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let counting = |instance: usize| {
        let served = served.clone();
        request_handler(move |msg: Message| {
            served[instance].fetch_add(1, Ordering::SeqCst);
            async move { msg }
        })
    };
    let (work_a, work_b) = (Work::default(), Work::default());
    a.serve(vec![(endpoint.clone(), counting(0))], &work_a)
        .await
        .unwrap_or_else(|e| panic!("serving `{subject}` on instance A failed: {e}"));
    b.serve(vec![(endpoint, counting(1))], &work_b)
        .await
        .unwrap_or_else(|e| panic!("serving `{subject}` on instance B failed: {e}"));

    for i in 0..50 {
        client
            .request(&subject, Message::new(format!("{{\"i\":{i}}}")), PATIENCE)
            .await
            .unwrap_or_else(|e| {
                panic!("request {i} to `{subject}` served by two instances failed: {e}")
            });
    }
    let (on_a, on_b) = (
        served[0].load(Ordering::SeqCst),
        served[1].load(Ordering::SeqCst),
    );
    assert_eq!(
        on_a + on_b,
        50,
        "each request must run exactly once (A ran {on_a}, B ran {on_b})"
    );
    assert!(
        on_a > 0 && on_b > 0,
        "two instances serving one command must share its requests (A ran {on_a}, B ran {on_b} of 50)"
    );

    stop(&work_a, "stopping instance A").await;
    served[0].store(0, Ordering::SeqCst);
    served[1].store(0, Ordering::SeqCst);
    for i in 0..20 {
        client
            .request(&subject, Message::new(format!("{{\"i\":{i}}}")), PATIENCE)
            .await
            .unwrap_or_else(|e| {
                panic!("request {i} to `{subject}` after instance A stopped failed: {e}")
            });
    }
    let (on_a, on_b) = (
        served[0].load(Ordering::SeqCst),
        served[1].load(Ordering::SeqCst),
    );
    assert_eq!(
        (on_a, on_b),
        (0, 20),
        "after instance A stopped, every request must go to instance B"
    );
    stop(&work_b, "stopping instance B").await;
}

/// Counts deliveries per event id and per instance.
#[derive(Default)]
struct Deliveries {
    by_id: Mutex<HashMap<String, usize>>,
    by_instance: [AtomicUsize; 2],
}

impl Deliveries {
    fn handler(self: &Arc<Self>, instance: usize) -> EventHandler {
        let deliveries = self.clone();
        event_handler(move |msg: Message| {
            let deliveries = deliveries.clone();
            async move {
                let id = msg.meta.message_id.clone().unwrap_or_default();
                *deliveries.lock().entry(id).or_default() += 1;
                deliveries.by_instance[instance].fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn distinct(&self) -> usize {
        self.lock().len()
    }

    fn total(&self) -> usize {
        self.lock().values().sum()
    }
}

async fn each_event_reaches_one_instance<F, Fut>(make: &F, run: &Run)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (a, b, publisher) = (make().await, make().await, make().await);
    let service = run.service("once");
    let spec = run.spec(&service, "count", "ticked", 5);
    let deliveries = Arc::new(Deliveries::default());
    let (work_a, work_b) = (Work::default(), Work::default());
    a.subscribe(spec.clone(), deliveries.handler(0), &work_a)
        .await
        .unwrap_or_else(|e| panic!("subscribing on instance A failed: {e}"));
    b.subscribe(spec, deliveries.handler(1), &work_b)
        .await
        .unwrap_or_else(|e| panic!("subscribing on instance B failed: {e}"));

    let subject = run.subjects.event(&service, "ticked");
    for i in 0..20 {
        publisher
            .publish(
                &subject,
                event(&format!("tick-{i}"), &format!("{{\"i\":{i}}}")),
            )
            .await
            .unwrap_or_else(|e| panic!("publishing event {i} to `{subject}` failed: {e}"));
    }
    eventually(
        "20 events published to a subscription shared by two instances must all be delivered",
        PATIENCE,
        || deliveries.distinct() == 20,
    )
    .await;
    sleep(QUIET).await;
    let total = deliveries.total();
    assert_eq!(
        total,
        20,
        "each event must reach exactly one instance of a shared subscription, got {total} deliveries of 20 events: {:?}",
        deliveries.lock()
    );
    stop(&work_a, "stopping instance A").await;
    stop(&work_b, "stopping instance B").await;
}

async fn failed_event_is_redelivered<F, Fut>(make: &F, run: &Run)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (subscriber, publisher) = (make().await, make().await);
    let service = run.service("retry");
    let spec = run.spec(&service, "flaky", "happened", 5);
    let attempts = Arc::new(Mutex::new(Vec::<Message>::new()));
    let handler = event_handler({
        let attempts = attempts.clone();
        move |msg: Message| {
            let attempts = attempts.clone();
            async move {
                let mut attempts = attempts.lock().unwrap_or_else(|p| p.into_inner());
                attempts.push(msg);
                if attempts.len() == 1 {
                    Err(Error::unavailable("the first attempt fails"))
                } else {
                    Ok(())
                }
            }
        }
    });
    let work = Work::default();
    subscriber
        .subscribe(spec, handler, &work)
        .await
        .unwrap_or_else(|e| panic!("subscribing failed: {e}"));
    let sent = event("flaky-1", r#"{"flaky":true}"#);
    let subject = run.subjects.event(&service, "happened");
    publisher
        .publish(&subject, sent.clone())
        .await
        .unwrap_or_else(|e| panic!("publishing to `{subject}` failed: {e}"));
    let count = || attempts.lock().unwrap_or_else(|p| p.into_inner()).len();
    eventually(
        "an event whose handler failed once must be delivered again",
        PATIENCE,
        || count() >= 2,
    )
    .await;
    sleep(QUIET).await;
    assert_eq!(
        count(),
        2,
        "an event handled successfully on its second attempt must not be delivered again"
    );
    for attempt in attempts.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        assert_eq!(
            attempt.payload, sent.payload,
            "a redelivered event must keep its body"
        );
        assert_eq!(
            attempt.meta.message_id, sent.meta.message_id,
            "a redelivered event must keep its id"
        );
    }
    stop(&work, "stopping the flaky subscription").await;
}

async fn failing_event_stops_after_max_attempts<F, Fut>(make: &F, run: &Run)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (subscriber, publisher) = (make().await, make().await);
    let service = run.service("poison");
    let spec = run.spec(&service, "doomed", "poisoned", 3);
    let attempts = Arc::new(AtomicUsize::new(0));
    let handler = event_handler({
        let attempts = attempts.clone();
        move |_msg: Message| {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { Err(Error::internal("this handler always fails")) }
        }
    });
    let work = Work::default();
    subscriber
        .subscribe(spec, handler, &work)
        .await
        .unwrap_or_else(|e| panic!("subscribing failed: {e}"));
    let subject = run.subjects.event(&service, "poisoned");
    publisher
        .publish(&subject, event("poison-1", "{}"))
        .await
        .unwrap_or_else(|e| panic!("publishing to `{subject}` failed: {e}"));
    eventually(
        "an event that always fails must be attempted max_attempts (3) times",
        PATIENCE,
        || attempts.load(Ordering::SeqCst) >= 3,
    )
    .await;
    // Longer than the backoff and the ack wait: a fourth attempt would come within it.
    sleep(QUIET).await;
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "after max_attempts (3) the event must be dead-lettered, not delivered again"
    );
    stop(&work, "stopping the failing subscription").await;
}

async fn stopping_an_instance_loses_no_event<F, Fut>(make: &F, run: &Run)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (a, b, publisher) = (make().await, make().await, make().await);
    let service = run.service("handover");
    let spec = run.spec(&service, "slow", "queued", 5);
    let started_on_a = Arc::new(AtomicUsize::new(0));
    let finished_on_a = Arc::new(AtomicUsize::new(0));
    let deliveries = Arc::new(Deliveries::default());
    let slow = event_handler({
        let (started, finished, deliveries) = (
            started_on_a.clone(),
            finished_on_a.clone(),
            deliveries.clone(),
        );
        move |msg: Message| {
            let (started, finished, deliveries) =
                (started.clone(), finished.clone(), deliveries.clone());
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                sleep(Duration::from_millis(300)).await;
                let id = msg.meta.message_id.clone().unwrap_or_default();
                *deliveries.lock().entry(id).or_default() += 1;
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
    });
    let work_a = Work::default();
    a.subscribe(spec.clone(), slow, &work_a)
        .await
        .unwrap_or_else(|e| panic!("subscribing on instance A failed: {e}"));
    let subject = run.subjects.event(&service, "queued");
    for i in 0..HANDOVER_EVENTS {
        publisher
            .publish(&subject, event(&format!("queued-{i}"), "{}"))
            .await
            .unwrap_or_else(|e| panic!("publishing to `{subject}` failed: {e}"));
    }
    eventually("instance A must start handling events", PATIENCE, || {
        started_on_a.load(Ordering::SeqCst) > 0
    })
    .await;

    let work_b = Work::default();
    b.subscribe(spec, deliveries.handler(1), &work_b)
        .await
        .unwrap_or_else(|e| panic!("subscribing on instance B failed: {e}"));
    stop(&work_a, "stopping instance A with events in flight").await;
    let (started, finished) = (
        started_on_a.load(Ordering::SeqCst),
        finished_on_a.load(Ordering::SeqCst),
    );
    assert_eq!(
        started, finished,
        "stopping an instance must let the events it started finish ({started} started, {finished} finished)"
    );
    eventually(
        "every event must be handled once one of two instances stopped: none may be lost",
        PATIENCE,
        || deliveries.distinct() == HANDOVER_EVENTS,
    )
    .await;
    sleep(QUIET).await;
    let total = deliveries.total();
    assert_eq!(
        total,
        HANDOVER_EVENTS,
        "an event finished by the stopping instance must not be handled again ({total} deliveries of {HANDOVER_EVENTS} events: {:?})",
        deliveries.lock()
    );
    stop(&work_b, "stopping instance B").await;
}

async fn every_instance_subscription_reaches_each_instance<F, Fut>(make: &F, run: &Run)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let (a, b, publisher) = (make().await, make().await, make().await);
    let service = run.service("fanout");
    let spec = SubscriptionSpec {
        every_instance: true,
        ..run.spec(&service, "cache", "changed", 5)
    };
    let on = [
        Arc::new(Deliveries::default()),
        Arc::new(Deliveries::default()),
    ];
    let (work_a, work_b) = (Work::default(), Work::default());
    a.subscribe(spec.clone(), on[0].handler(0), &work_a)
        .await
        .unwrap_or_else(|e| panic!("subscribing on instance A failed: {e}"));
    b.subscribe(spec, on[1].handler(1), &work_b)
        .await
        .unwrap_or_else(|e| panic!("subscribing on instance B failed: {e}"));
    let subject = run.subjects.event(&service, "changed");
    for i in 0..5 {
        publisher
            .publish(&subject, event(&format!("changed-{i}"), "{}"))
            .await
            .unwrap_or_else(|e| panic!("publishing to `{subject}` failed: {e}"));
    }
    for (instance, deliveries) in ["A", "B"].iter().zip(&on) {
        eventually(
            &format!("an every-instance subscription must deliver each of 5 events to instance {instance}"),
            PATIENCE,
            || deliveries.distinct() == 5,
        )
        .await;
    }
    sleep(QUIET).await;
    for (instance, deliveries) in ["A", "B"].iter().zip(&on) {
        let total = deliveries.total();
        assert_eq!(
            total, 5,
            "instance {instance} must get each event once, got {total} deliveries of 5"
        );
    }
    stop(&work_a, "stopping instance A").await;
    stop(&work_b, "stopping instance B").await;
}
