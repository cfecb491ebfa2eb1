//! The conformance suite of [`Broker`]: what every broker must do, so that an app behaves the same
//! on the embedded broker in development and on NATS in production.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::time::{Instant, sleep};

use super::{eventually, lock};
use crate::broker::spi::{
    Broker, Endpoint, EventHandler, RequestHandler, StartPosition, SubscriptionSpec, Work,
};
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
/// How much older the old events of the start positions' scenario are than the recent ones.
const OLD_AGE: Duration = Duration::from_secs(3);
/// The `since` window of that scenario: the recent events fall in it, the old ones do not.
const SINCE: Duration = Duration::from_millis(1500);
/// More events than an instance handles at once, so that some are still waiting when it stops.
const HANDOVER_EVENTS: usize = 100;

/// Runs the conformance suite, panicking with a message that names the first contract broken.
///
/// Each call of `make` returns the broker handle of a new instance of the same deployment: clones
/// of one `MemoryBroker`, or new connections to the same NATS servers. The brokers must use the
/// default subject prefix (`cohort`); every run uses its own service names, so runs may share a
/// server. The suite takes about half a minute.
///
/// ```no_run
/// # async fn demo() {
/// use std::sync::Arc;
/// use cohort::broker::MemoryBroker;
/// use cohort::broker::spi::Broker;
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
    request_reply_round_trip(&run, instances(&make).await).await;
    no_responders_fail_fast(&run, instances(&make).await).await;
    slow_handler_times_out(&run, instances(&make).await).await;
    long_command_gets_its_reply(&run, instances(&make).await).await;
    requests_run_concurrently(&run, instances(&make).await).await;
    requests_spread_over_instances_and_avoid_stopped_ones(&run, instances(&make).await).await;
    stopping_an_instance_under_load_loses_no_request(&run, instances(&make).await).await;
    each_event_reaches_one_instance(&run, instances(&make).await).await;
    failed_event_is_redelivered(&run, instances(&make).await).await;
    failing_event_stops_after_max_attempts(&run, instances(&make).await).await;
    stopping_an_instance_loses_no_event(&run, instances(&make).await).await;
    every_instance_subscription_reaches_each_instance(&run, instances(&make).await).await;
    every_instance_subscription_starts_at_its_position(&run, instances(&make).await).await;
}

/// `N` new instances from `make`, made one after another.
async fn instances<const N: usize, F, Fut>(make: &F) -> [Arc<dyn Broker>; N]
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Broker>>,
{
    let mut made = Vec::with_capacity(N);
    for _ in 0..N {
        made.push(make().await);
    }
    made.try_into()
        .unwrap_or_else(|_| unreachable!("exactly {N} instances were made"))
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
            start: StartPosition::Resume,
            max_attempts,
            backoff: vec![BACKOFF],
            ack_wait: ACK_WAIT,
            dead_letter_subject: self.subjects.dead_letter(service, name),
            report: Default::default(),
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
pub fn event(id: &str, body: &str) -> Message {
    Message {
        meta: Box::new(Metadata {
            message_id: Some(id.to_owned()),
            content_type: Some(JSON.to_owned()),
            ..Metadata::default()
        }),
        payload: Bytes::from(body.to_owned()),
    }
}

/// ` on instance NAME` for a failure message, or nothing when the scenario has one instance.
fn on_instance(instance: Option<&str>) -> String {
    instance
        .map(|name| format!(" on instance {name}"))
        .unwrap_or_default()
}

/// Serves `endpoint` with `handler` on `broker` until the returned work stops. `instance` names
/// the broker in a failure message when the scenario has several.
async fn serve(
    broker: &dyn Broker,
    endpoint: Endpoint,
    handler: RequestHandler,
    instance: Option<&str>,
) -> Work {
    let subject = endpoint.subject.clone();
    let work = Work::default();
    broker
        .serve(vec![(endpoint, handler)], &work)
        .await
        .unwrap_or_else(|e| panic!("serving `{subject}`{} failed: {e}", on_instance(instance)));
    work
}

/// Subscribes `handler` on `broker` until the returned work stops. `instance` names the broker in
/// a failure message when the scenario has several.
async fn subscribe(
    broker: &dyn Broker,
    spec: SubscriptionSpec,
    handler: EventHandler,
    instance: Option<&str>,
) -> Work {
    let work = Work::default();
    broker
        .subscribe(spec, handler, &work)
        .await
        .unwrap_or_else(|e| panic!("subscribing{} failed: {e}", on_instance(instance)));
    work
}

/// Sends `msg` to `subject` and returns the reply, panicking when none comes.
async fn request(client: &dyn Broker, subject: &str, msg: Message) -> Message {
    client
        .request(subject, msg, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("request to `{subject}` failed: {e}"))
}

async fn publish(publisher: &dyn Broker, subject: &str, msg: Message) {
    publisher
        .publish(subject, msg)
        .await
        .unwrap_or_else(|e| panic!("publishing to `{subject}` failed: {e}"));
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

/// A handler that records the request it got in `seen` and replies with a 201 echo of its body,
/// or with a 409 problem when the body is `"conflict"`.
fn echo_or_conflict(seen: Arc<Mutex<Option<Message>>>) -> RequestHandler {
    request_handler(move |msg: Message| {
        let seen = seen.clone();
        async move {
            let conflict = msg.payload.as_ref() == b"\"conflict\"";
            *lock(&seen) = Some(msg.clone());
            if conflict {
                let err = Error::conflict("taken").with_code("taken");
                return Message {
                    meta: Box::new(Metadata {
                        status: Some(err.status()),
                        content_type: Some(PROBLEM_JSON.to_owned()),
                        ..Metadata::default()
                    }),
                    payload: Bytes::from(err.to_problem_json()),
                };
            }
            Message {
                meta: Box::new(Metadata {
                    status: Some(201),
                    content_type: Some(JSON.to_owned()),
                    session_set: Some("session-2".to_owned()),
                    instance: Some("server".to_owned()),
                    ..Metadata::default()
                }),
                payload: msg.payload,
            }
        }
    })
}

/// Every metadata header a caller may send.
fn caller_metadata() -> Metadata {
    Metadata {
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
    }
}

async fn request_reply_round_trip(run: &Run, [server, client]: [Arc<dyn Broker>; 2]) {
    let service = run.service("echo");
    let endpoint = run.endpoint(&service, "echo");
    let subject = endpoint.subject.clone();
    let seen = Arc::new(Mutex::new(None::<Message>));
    let work = serve(&*server, endpoint, echo_or_conflict(seen.clone()), None).await;

    let sent = caller_metadata();
    let body = Bytes::from_static(br#"{"n":1,"s":"h\u00e9"}"#);
    let request_msg = Message {
        meta: Box::new(sent.clone()),
        payload: body.clone(),
    };
    let reply = request(&*client, &subject, request_msg).await;
    let received = lock(&seen)
        .take()
        .unwrap_or_else(|| panic!("a reply came back, but the handler of `{subject}` never ran"));
    assert_eq!(
        *received.meta, sent,
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
    error_reply_carries_its_problem(&*client, &subject).await;
    stop(&work, "request/reply").await;
}

/// Checks the error reply of [`echo_or_conflict`] served at `subject`.
async fn error_reply_carries_its_problem(client: &dyn Broker, subject: &str) {
    let conflict = Message::new(Bytes::from_static(b"\"conflict\""));
    let reply = request(client, subject, conflict).await;
    assert_eq!(reply.status(), 409, "an error reply must carry its status");
    assert_eq!(reply.meta.content_type.as_deref(), Some(PROBLEM_JSON));
    let err = Error::from_problem_json(reply.status(), &reply.payload);
    assert_eq!(
        (err.kind(), err.code()),
        (ErrorKind::Conflict, "taken"),
        "an error reply must carry its problem body"
    );
}

async fn no_responders_fail_fast(run: &Run, [client]: [Arc<dyn Broker>; 1]) {
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

/// A handler that waits `delay` and then echoes the request.
fn delayed_echo(delay: Duration) -> RequestHandler {
    request_handler(move |msg: Message| async move {
        sleep(delay).await;
        msg
    })
}

async fn slow_handler_times_out(run: &Run, [server, client]: [Arc<dyn Broker>; 2]) {
    let endpoint = run.endpoint(&run.service("slow"), "slow");
    let subject = endpoint.subject.clone();
    let handler = delayed_echo(Duration::from_millis(1500));
    let work = serve(&*server, endpoint, handler, None).await;
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

/// Longer than any broker may wait without a word from the instance running a command before it
/// takes that instance as lost (NATS: 2.5 s).
const LONG_COMMAND: Duration = Duration::from_secs(5);

/// A command that runs longer than the broker's silence limit, on an instance that is alive, gets
/// its reply: the broker must tell a long command from a lost instance.
async fn long_command_gets_its_reply(run: &Run, [server, client]: [Arc<dyn Broker>; 2]) {
    let endpoint = run.endpoint(&run.service("long"), "long");
    let subject = endpoint.subject.clone();
    let work = serve(&*server, endpoint, delayed_echo(LONG_COMMAND), None).await;
    let started = Instant::now();
    let reply = client
        .request(&subject, Message::new(Bytes::from_static(b"{}")), PATIENCE)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "a command that runs {LONG_COMMAND:?} on a live instance must get its reply, \
                 not: {e} (after {:?})",
                started.elapsed()
            )
        });
    assert_eq!(reply.payload.as_ref(), b"{}");
    assert!(
        started.elapsed() >= LONG_COMMAND,
        "the reply came before the command finished ({:?})",
        started.elapsed()
    );
    stop(&work, "long command").await;
}

async fn requests_run_concurrently(run: &Run, [server, client]: [Arc<dyn Broker>; 2]) {
    let endpoint = run.endpoint(&run.service("parallel"), "wait");
    let subject = endpoint.subject.clone();
    let handler = delayed_echo(Duration::from_millis(500));
    let work = serve(&*server, endpoint, handler, None).await;
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

/// Sends `count` requests to `subject` one after another; `when` says in a failure message what
/// the scenario was doing.
async fn send_requests(client: &dyn Broker, subject: &str, count: usize, when: &str) {
    for i in 0..count {
        client
            .request(subject, Message::new(format!("{{\"i\":{i}}}")), PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("request {i} to `{subject}` {when} failed: {e}"));
    }
}

/// Counts the requests each of two instances served.
#[derive(Default)]
struct Served([AtomicUsize; 2]);

impl Served {
    /// A handler for `instance` that counts each request and echoes it.
    fn handler(self: &Arc<Self>, instance: usize) -> RequestHandler {
        let served = self.clone();
        request_handler(move |msg: Message| {
            served.0[instance].fetch_add(1, Ordering::SeqCst);
            async move { msg }
        })
    }

    /// How many requests instances A and B served.
    fn counts(&self) -> (usize, usize) {
        (
            self.0[0].load(Ordering::SeqCst),
            self.0[1].load(Ordering::SeqCst),
        )
    }

    fn reset(&self) {
        self.0[0].store(0, Ordering::SeqCst);
        self.0[1].store(0, Ordering::SeqCst);
    }
}

async fn requests_spread_over_instances_and_avoid_stopped_ones(
    run: &Run,
    [a, b, client]: [Arc<dyn Broker>; 3],
) {
    let endpoint = run.endpoint(&run.service("spread"), "work");
    let subject = endpoint.subject.clone();
    let served = Arc::new(Served::default());
    let work_a = serve(&*a, endpoint.clone(), served.handler(0), Some("A")).await;
    let work_b = serve(&*b, endpoint, served.handler(1), Some("B")).await;

    send_requests(&*client, &subject, 50, "served by two instances").await;
    let (on_a, on_b) = served.counts();
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
    served.reset();
    send_requests(&*client, &subject, 20, "after instance A stopped").await;
    assert_eq!(
        served.counts(),
        (0, 20),
        "after instance A stopped, every request must go to instance B"
    );
    stop(&work_b, "stopping instance B").await;
}

/// Requests in flight at once while an instance stops, and how long one may take before it counts
/// as lost.
const LOAD_CALLERS: usize = 8;
const LOST_AFTER: Duration = Duration::from_secs(3);

/// A rolling restart under load: instance B joins and leaves again and again while callers keep
/// sending requests; A serves throughout. A request routed to B just as it leaves must still be
/// answered, not left to time out.
async fn stopping_an_instance_under_load_loses_no_request(
    run: &Run,
    [a, b, client]: [Arc<dyn Broker>; 3],
) {
    let endpoint = run.endpoint(&run.service("restart"), "work");
    let echo = || delayed_echo(Duration::ZERO);
    let work_a = serve(&*a, endpoint.clone(), echo(), Some("A")).await;
    let loading = Arc::new(AtomicBool::new(true));
    let callers: Vec<_> = (0..LOAD_CALLERS)
        .map(|caller| keep_calling(client.clone(), endpoint.subject.clone(), caller, &loading))
        .collect();
    for round in 0..5 {
        let work_b = serve(&*b, endpoint.clone(), echo(), Some("B")).await;
        sleep(Duration::from_millis(100)).await;
        let what = format!("stopping instance B under load (round {round})");
        stop(&work_b, &what).await;
    }
    loading.store(false, Ordering::SeqCst);
    let mut answered = 0;
    for caller in callers {
        match caller.await {
            Ok(Ok(sent)) => answered += sent,
            Ok(Err(lost)) => panic!("an instance leaving under load lost a request: {lost}"),
            Err(panic) => panic!("a caller panicked: {panic}"),
        }
    }
    assert!(answered > 0, "the callers got no answer at all");
    stop(&work_a, "stopping instance A").await;
}

/// Sends requests to `subject` one after another while `loading` holds; the number answered, or
/// the first that failed.
fn keep_calling(
    client: Arc<dyn Broker>,
    subject: String,
    caller: usize,
    loading: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<usize, String>> {
    let loading = loading.clone();
    tokio::spawn(async move {
        let mut sent = 0usize;
        while loading.load(Ordering::SeqCst) {
            let msg = Message::new(format!("{{\"caller\":{caller},\"n\":{sent}}}"));
            if let Err(err) = client.request(&subject, msg, LOST_AFTER).await {
                return Err(format!("request {sent} of caller {caller} failed: {err}"));
            }
            sent += 1;
        }
        Ok(sent)
    })
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
                deliveries.record(&msg);
                deliveries.by_instance[instance].fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
    }

    /// Counts one delivery of `msg`'s id.
    fn record(&self, msg: &Message) {
        let id = msg.meta.message_id.clone().unwrap_or_default();
        *self.lock().entry(id).or_default() += 1;
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        lock(&self.by_id)
    }

    fn distinct(&self) -> usize {
        self.lock().len()
    }

    fn total(&self) -> usize {
        self.lock().values().sum()
    }

    /// How often each event was delivered, by id.
    fn counts(&self) -> BTreeMap<String, usize> {
        self.lock().iter().map(|(id, n)| (id.clone(), *n)).collect()
    }
}

async fn each_event_reaches_one_instance(run: &Run, [a, b, publisher]: [Arc<dyn Broker>; 3]) {
    let service = run.service("once");
    let spec = run.spec(&service, "count", "ticked", 5);
    let deliveries = Arc::new(Deliveries::default());
    let work_a = subscribe(&*a, spec.clone(), deliveries.handler(0), Some("A")).await;
    let work_b = subscribe(&*b, spec, deliveries.handler(1), Some("B")).await;

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
        async || deliveries.distinct() == 20,
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

/// A handler that records every attempt in `attempts` and fails only the first.
fn fails_once(attempts: Arc<Mutex<Vec<Message>>>) -> EventHandler {
    event_handler(move |msg: Message| {
        let attempts = attempts.clone();
        async move {
            let mut attempts = lock(&attempts);
            attempts.push(msg);
            if attempts.len() == 1 {
                Err(Error::unavailable("the first attempt fails"))
            } else {
                Ok(())
            }
        }
    })
}

async fn failed_event_is_redelivered(run: &Run, [subscriber, publisher]: [Arc<dyn Broker>; 2]) {
    let service = run.service("retry");
    let spec = run.spec(&service, "flaky", "happened", 5);
    let attempts = Arc::new(Mutex::new(Vec::<Message>::new()));
    let work = subscribe(&*subscriber, spec, fails_once(attempts.clone()), None).await;
    let sent = event("flaky-1", r#"{"flaky":true}"#);
    let subject = run.subjects.event(&service, "happened");
    publish(&*publisher, &subject, sent.clone()).await;
    let count = || lock(&attempts).len();
    eventually(
        "an event whose handler failed once must be delivered again",
        PATIENCE,
        async || count() >= 2,
    )
    .await;
    sleep(QUIET).await;
    assert_eq!(
        count(),
        2,
        "an event handled successfully on its second attempt must not be delivered again"
    );
    for attempt in lock(&attempts).iter() {
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

async fn failing_event_stops_after_max_attempts(
    run: &Run,
    [subscriber, publisher]: [Arc<dyn Broker>; 2],
) {
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
    let work = subscribe(&*subscriber, spec, handler, None).await;
    let subject = run.subjects.event(&service, "poisoned");
    publish(&*publisher, &subject, event("poison-1", "{}")).await;
    eventually(
        "an event that always fails must be attempted max_attempts (3) times",
        PATIENCE,
        async || attempts.load(Ordering::SeqCst) >= 3,
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

/// A handler that takes 300 ms over each event, counting the events it `started` and `finished`
/// and recording them in `deliveries`.
fn slow_recorder(
    started: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
    deliveries: Arc<Deliveries>,
) -> EventHandler {
    event_handler(move |msg: Message| {
        let (started, finished, deliveries) =
            (started.clone(), finished.clone(), deliveries.clone());
        async move {
            started.fetch_add(1, Ordering::SeqCst);
            sleep(Duration::from_millis(300)).await;
            deliveries.record(&msg);
            finished.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

async fn stopping_an_instance_loses_no_event(run: &Run, [a, b, publisher]: [Arc<dyn Broker>; 3]) {
    let service = run.service("handover");
    let spec = run.spec(&service, "slow", "queued", 5);
    let started_on_a = Arc::new(AtomicUsize::new(0));
    let finished_on_a = Arc::new(AtomicUsize::new(0));
    let deliveries = Arc::new(Deliveries::default());
    let slow = slow_recorder(
        started_on_a.clone(),
        finished_on_a.clone(),
        deliveries.clone(),
    );
    let work_a = subscribe(&*a, spec.clone(), slow, Some("A")).await;
    let subject = run.subjects.event(&service, "queued");
    for i in 0..HANDOVER_EVENTS {
        publish(&*publisher, &subject, event(&format!("queued-{i}"), "{}")).await;
    }
    eventually(
        "instance A must start handling events",
        PATIENCE,
        async || started_on_a.load(Ordering::SeqCst) > 0,
    )
    .await;

    let work_b = subscribe(&*b, spec, deliveries.handler(1), Some("B")).await;
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
        async || deliveries.distinct() == HANDOVER_EVENTS,
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

async fn every_instance_subscription_reaches_each_instance(
    run: &Run,
    [a, b, publisher]: [Arc<dyn Broker>; 3],
) {
    let service = run.service("fanout");
    let spec = SubscriptionSpec {
        every_instance: true,
        ..run.spec(&service, "cache", "changed", 5)
    };
    let on = [
        Arc::new(Deliveries::default()),
        Arc::new(Deliveries::default()),
    ];
    let work_a = subscribe(&*a, spec.clone(), on[0].handler(0), Some("A")).await;
    let work_b = subscribe(&*b, spec, on[1].handler(1), Some("B")).await;
    let subject = run.subjects.event(&service, "changed");
    for i in 0..5 {
        publish(&*publisher, &subject, event(&format!("changed-{i}"), "{}")).await;
    }
    for (instance, deliveries) in ["A", "B"].iter().zip(&on) {
        eventually(
            &format!("an every-instance subscription must deliver each of 5 events to instance {instance}"),
            PATIENCE,
            async || deliveries.distinct() == 5,
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

async fn every_instance_subscription_starts_at_its_position(
    run: &Run,
    [instance, publisher]: [Arc<dyn Broker>; 2],
) {
    let service = run.service("positions");
    let subject = run.subjects.event(&service, "changed");
    let other = run.subjects.event(&service, "other");
    // Each `changed` event next to one of another type: a position counts its own type only.
    // Ids no other scenario uses: a broker drops an id it stored in the last 2 minutes.
    let publish_pair = async |i: usize| {
        publish(&*publisher, &subject, event(&format!("moved-{i}"), "{}")).await;
        publish(&*publisher, &other, event(&format!("unmoved-{i}"), "{}")).await;
    };
    for i in 0..2 {
        publish_pair(i).await;
    }
    sleep(OLD_AGE).await;
    for i in 2..5 {
        publish_pair(i).await;
    }
    let positioned = |name: &str, start| SubscriptionSpec {
        every_instance: true,
        start,
        ..run.spec(&service, name, "changed", 5)
    };
    let starts = [
        (
            "since",
            StartPosition::Since(SINCE),
            vec!["moved-2", "moved-3", "moved-4"],
        ),
        (
            "last",
            StartPosition::Last(2),
            vec!["moved-4", "moved-after-since"],
        ),
        // The same instance subscribing again (it restarted): the position applies again.
        (
            "last",
            StartPosition::Last(2),
            vec!["moved-after-since", "moved-after-last"],
        ),
        ("new", StartPosition::New, vec![]),
    ];
    for (step, (name, start, replayed)) in starts.into_iter().enumerate() {
        let after = if step == 2 {
            "moved-after-restart".to_owned()
        } else {
            format!("moved-after-{name}")
        };
        let what = format!("an every-instance subscription starting at {start:?} (step {step})");
        let deliveries = Arc::new(Deliveries::default());
        let work = subscribe(
            &*instance,
            positioned(name, start),
            deliveries.handler(0),
            None,
        )
        .await;
        eventually(
            &format!("{what} must replay {replayed:?}"),
            PATIENCE,
            async || deliveries.distinct() >= replayed.len(),
        )
        .await;
        publish(&*publisher, &subject, event(&after, "{}")).await;
        let expected: BTreeMap<String, usize> = replayed
            .iter()
            .map(|id| (*id).to_owned())
            .chain([after])
            .map(|id| (id, 1))
            .collect();
        eventually(
            &format!("{what} must get {expected:?}"),
            PATIENCE,
            async || deliveries.distinct() >= expected.len(),
        )
        .await;
        sleep(QUIET).await;
        assert_eq!(
            deliveries.counts(),
            expected,
            "{what} must get exactly the events of its position, each once, then the new one"
        );
        stop(&work, &format!("stopping {what}")).await;
    }
}
