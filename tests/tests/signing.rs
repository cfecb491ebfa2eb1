//! Signed cluster messages, against a real NATS server: with a cluster key, a command, reply or
//! event that is unsigned, forged or changed on the way is refused, one signed by hand with the
//! guide's algorithm is taken, the key rotates without refusals, and a cluster without a key
//! refuses to start unless told otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;
use cohort::broker::spi::{Broker, Subjects};
use cohort::broker::{NatsBroker, NatsOptions};
use cohort::testing::{Cluster, NatsServer, RedisServer, eventually_ok, run_broker_suite};
use cohort::{App, ClusterKey, Config};
use cohort_tests::jetstream::EventStreams;
use cohort_tests::signing::{headers, sign_by_hand};
use cohort_tests::{Client, wait_for_audit};
use serde_json::{Value, json};

/// Naming the example app's code keeps its registrations linked into this test binary.
fn link_example_app() {
    let _ = example_app::app;
}

const SET_STOCK: &str = "cohort.cmd.orders.v1.set_stock";
const ORDER_PLACED: &str = "cohort.evt.orders.order_placed";
const PATIENCE: Duration = Duration::from_secs(20);

/// The (name, value) pairs of a message's headers.
fn pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .flat_map(|(name, values)| {
            let name: &str = name.as_ref();
            values
                .iter()
                .map(move |value| (name.to_owned(), value.as_str().to_owned()))
        })
        .collect()
}

fn header<'a>(message: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(name))
        .map(|value| value.as_str())
}

/// A one-instance signed cluster of the example app, a plain NATS client, and SKU `nail` at 5.
async fn signed_cluster() -> (Cluster, async_nats::Client, Client) {
    link_example_app();
    let cluster = Cluster::start(1).await;
    let plain = async_nats::connect(cluster.nats.url())
        .await
        .expect("a plain client connects");
    let http = Client::new(cluster.http(0));
    http.sign_in_admin().await;
    assert_eq!(http.put("/stock/nail", json!({"qty": 5})).await.status, 200);
    (cluster, plain, http)
}

/// Calls `set_stock` from a plain NATS client with `headers`; returns the reply.
async fn call_set_stock(
    plain: &async_nats::Client,
    headers: HeaderMap,
    body: &'static [u8],
) -> async_nats::Message {
    plain
        .request_with_headers(SET_STOCK, headers, Bytes::from_static(body))
        .await
        .expect("the command is answered")
}

/// Asserts that `reply` refuses its command for its signature.
fn assert_refused(reply: &async_nats::Message) {
    assert_eq!(header(reply, "Cohort-Status"), Some("401"));
    let problem: Value = serde_json::from_slice(&reply.payload).expect("a problem body");
    assert_eq!(problem["code"], "bad_signature", "{problem}");
}

async fn stock_of_nail(http: &Client) -> Value {
    let reply = http.get("/stock/nail").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["qty"].clone()
}

const STEAL: &[u8] = br#"{"sku":"nail","qty":999}"#;

#[tokio::test]
async fn an_unsigned_command_gets_401_and_its_handler_does_not_run() {
    let (_cluster, plain, http) = signed_cluster().await;
    let reply = call_set_stock(&plain, HeaderMap::new(), STEAL).await;
    assert_refused(&reply);
    assert_eq!(stock_of_nail(&http).await, 5, "set_stock did not run");
}

#[tokio::test]
async fn a_command_signed_with_another_key_gets_401() {
    let (_cluster, plain, http) = signed_cluster().await;
    let other = ClusterKey::random();
    let meta = [("Cohort-Principal", "admin")];
    let forged = headers(Some(other.expose()), SET_STOCK, &meta, STEAL);
    assert_refused(&call_set_stock(&plain, forged, STEAL).await);
    assert_eq!(stock_of_nail(&http).await, 5, "set_stock did not run");
}

#[tokio::test]
async fn a_header_changed_after_signing_gets_401() {
    let (cluster, plain, http) = signed_cluster().await;
    let key = cluster.key.expose();
    let mut tampered = headers(
        Some(key),
        SET_STOCK,
        &[("Cohort-Principal", "guest")],
        STEAL,
    );
    tampered.insert("Cohort-Principal", "admin");
    assert_refused(&call_set_stock(&plain, tampered, STEAL).await);
    let mut body_changed = headers(Some(key), SET_STOCK, &[], br#"{"sku":"nail","qty":6}"#);
    body_changed.insert("Cohort-Tenant", "added later");
    assert_refused(&call_set_stock(&plain, body_changed, STEAL).await);
    assert_eq!(stock_of_nail(&http).await, 5, "set_stock did not run");
}

#[tokio::test]
async fn a_command_signed_by_hand_runs_and_its_reply_is_signed_the_same_way() {
    let (cluster, plain, http) = signed_cluster().await;
    let key = cluster.key.expose();
    let body: &[u8] = br#"{"sku":"nail","qty":7}"#;
    // The admin's session: `set_stock`'s guard wants it, whoever calls.
    let cookie = http.cookie().expect("the admin's session");
    let session = cookie.trim_start_matches("cohort_session=");
    let meta = [
        ("Cohort-Principal", "warehouse"),
        ("Cohort-Session", session),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ];
    let reply = call_set_stock(&plain, headers(Some(key), SET_STOCK, &meta, body), b"").await;
    // Sent with an empty body, the signature (of the real body) no longer matches.
    assert_refused(&reply);
    let signed = headers(Some(key), SET_STOCK, &meta, body);
    let reply = plain
        .request_with_headers(SET_STOCK, signed, Bytes::from_static(body))
        .await
        .expect("answered");
    assert_eq!(
        header(&reply, "Cohort-Status"),
        None,
        "a success carries no status: {:?}",
        reply.payload
    );
    assert_eq!(stock_of_nail(&http).await, 7, "set_stock ran");

    let reply_headers = pairs(reply.headers.as_ref().expect("headers"));
    let borrowed: Vec<(&str, &str)> = reply_headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        header(&reply, "Cohort-Signature").map(str::to_owned),
        Some(sign_by_hand(
            key,
            reply.subject.as_str(),
            &borrowed,
            &reply.payload
        )),
        "the reply carries the documented signature of its inbox subject, headers and body"
    );
}

#[tokio::test]
async fn a_forged_event_is_dead_lettered_and_not_counted() {
    let (cluster, plain, http) = signed_cluster().await;
    let js = jetstream::new(plain.clone());
    let event = br#"{"id":9001,"sku":"nail","qty":1}"#;
    let unsigned = headers(
        None,
        ORDER_PLACED,
        &[("Cohort-Message-Id", "forged-1")],
        event,
    );
    let other = ClusterKey::random();
    let meta = [("Cohort-Message-Id", "forged-2")];
    let forged = headers(Some(other.expose()), ORDER_PLACED, &meta, event);
    for headers in [unsigned, forged] {
        js.publish_with_headers(ORDER_PLACED, headers, Bytes::from_static(event))
            .await
            .expect("published")
            .await
            .expect("stored");
    }
    // Each forged event, once per audit subscription (`count_order`, and `hear_order` on the one
    // instance).
    let streams = EventStreams::connect(&cluster.nats.url()).await;
    eventually_ok("four dead letters", PATIENCE, async || {
        match streams.dead_letters().await? {
            4 => Ok(()),
            n => Err(format!("{n} dead letters so far")),
        }
    })
    .await;
    let letter = js
        .get_stream("COHORT_DLQ")
        .await
        .expect("the dead-letter stream")
        .get_last_raw_message_by_subject("cohort.dlq.audit.count_order")
        .await
        .expect("a dead letter of count_order");
    let reason = letter
        .headers
        .get("Cohort-Error")
        .expect("the reason")
        .as_str();
    assert!(reason.contains("refused"), "{reason}");

    // A genuine order is counted; the forged ones never were.
    assert_eq!(
        http.post("/orders", json!({"sku": "nail", "qty": 1}))
            .await
            .status,
        201
    );
    let audit = wait_for_audit(&http, 1).await;
    assert_eq!(audit["orders_seen"], 1, "{audit}");
    assert_eq!(audit["heard_by_instance"]["i0"], 1, "{audit}");
}

/// Two instances: `i0` (HTTP) serves every service but echo, `i1` serves only echo, so that a
/// POST /echo on `i0` crosses to `i1` and back. Keys as `keys(i)` gives them.
async fn split_cluster(keys: impl Fn(usize) -> (ClusterKey, Option<ClusterKey>)) -> Cluster {
    link_example_app();
    Cluster::start_with(2, |i, config| {
        let (key, previous) = keys(i);
        config.cluster_key = Some(key);
        config.cluster_key_previous = previous;
        let services = ["orders,accounts,audit", "echo"][i];
        config.services = Some(services.split(',').map(str::to_owned).collect());
    })
    .await
}

#[tokio::test]
async fn while_rotating_instances_with_the_keys_swapped_work_together() {
    // Step 2 of a rotation from A to B, half done: `i0` signs with B and accepts A, `i1` still
    // signs with A and accepts B (step 1 gave it B).
    let (a, b) = (ClusterKey::random(), ClusterKey::random());
    let cluster = split_cluster(|i| match i {
        0 => (b.clone(), Some(a.clone())),
        _ => (a.clone(), Some(b.clone())),
    })
    .await;
    let reply = Client::new(cluster.http(0))
        .post("/echo", json!({"text": "rotating", "n": 1}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.executed_by(), Some("i1"));
    let reply = Client::new(cluster.http(1)).get("/stock/nail").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.executed_by(), Some("i0"));
}

#[tokio::test]
async fn an_instance_that_only_has_the_old_key_refuses_the_new_one() {
    // Why a rotation starts by adding the new key as the previous one everywhere: `i1`, which
    // has only A, takes nothing signed with B. Its commands refused...
    let (a, b) = (ClusterKey::random(), ClusterKey::random());
    let cluster = split_cluster(|i| match i {
        0 => (b.clone(), Some(a.clone())),
        _ => (a.clone(), None),
    })
    .await;
    let refused = Client::new(cluster.http(0))
        .post("/echo", json!({"text": "too early", "n": 1}))
        .await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    assert_eq!(refused.body["code"], "bad_signature", "{}", refused.text);
    // ...and the replies to its own: `i0` accepts A and runs them, `i1` refuses the B reply.
    let reply = Client::new(cluster.http(1)).get("/stock/nail").await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert_eq!(reply.body["code"], "bad_signature", "{}", reply.text);
}

#[tokio::test]
async fn a_reply_that_fails_its_check_is_an_error_at_once() {
    // `i0` dropped A too soon: `i1` (A, accepting B) runs the command, but its reply, signed with
    // A, is refused by `i0`; the caller learns it at once, not at its deadline.
    let (a, b) = (ClusterKey::random(), ClusterKey::random());
    let cluster = split_cluster(|i| match i {
        0 => (b.clone(), None),
        _ => (a.clone(), Some(b.clone())),
    })
    .await;
    let started = Instant::now();
    let reply = Client::new(cluster.http(0))
        .post("/echo", json!({"text": "lost reply", "n": 1}))
        .await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert_eq!(reply.body["code"], "bad_signature", "{}", reply.text);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn nats_without_a_cluster_key_refuses_to_start_unless_allowed() {
    link_example_app();
    let (nats, redis) = tokio::join!(NatsServer::start(), RedisServer::start());
    let mut config = Config::default();
    config.http_addr = None;
    config.nats_url = Some(nats.url());
    config.redis_url = Some(redis.url());
    let err = App::with_config(config.clone())
        .start()
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), "unsigned_cluster");
    assert!(err.message().contains("COHORT_CLUSTER_KEY"), "{err}");
    assert!(err.message().contains("COHORT_ALLOW_UNSIGNED"), "{err}");

    let mut previous_only = config.clone();
    previous_only.cluster_key_previous = Some(ClusterKey::random());
    let err = App::with_config(previous_only)
        .start()
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), "invalid_config");
    assert!(err.message().contains("COHORT_CLUSTER_KEY"), "{err}");

    let running = App::with_config(config)
        .allow_unsigned()
        .start()
        .await
        .expect("starts when allowed");
    running.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn a_short_cluster_key_in_the_environment_is_refused_by_name() {
    let vars =
        |name: &str| (name == "COHORT_CLUSTER_KEY").then(|| "only-twenty-one-bytes".to_owned());
    let err = Config::from_vars(vars).expect_err("too short");
    assert!(err.message().contains("COHORT_CLUSTER_KEY"), "{err}");
    assert!(!err.message().contains("only-twenty-one"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_nats_brokers_pass_the_suite() {
    let server = NatsServer::start().await;
    let url = server.url();
    let key = ClusterKey::random();
    let next = std::sync::atomic::AtomicUsize::new(0);
    run_broker_suite(|| {
        let (url, key) = (url.clone(), key.clone());
        let id = format!(
            "signed-{}",
            next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        async move {
            let mut options = NatsOptions::default();
            options.cluster_key = Some(key);
            let broker = NatsBroker::connect_with(&url, Subjects::default(), &id, options)
                .await
                .unwrap_or_else(|e| panic!("connecting to NATS at {url} failed: {e}"));
            Arc::new(broker) as Arc<dyn Broker>
        }
    })
    .await;
}
