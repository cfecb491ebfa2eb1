//! Many instances of the example app in one process, against one real NATS and one real Redis:
//! work spreads over all of them and all state is shared.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use cohort::testing::{Cluster, eventually};
use cohort::{App, Config};
use cohort_tests::drift::{announced_events, drift_checked};
use cohort_tests::jetstream::EventStreams;
use cohort_tests::logs::CapturedLogs;
use cohort_tests::{Client, wait_for_audit};
use futures_util::future::join_all;
use serde_json::{Value, json};

/// Naming the example app's code keeps its registrations linked into this test binary.
fn link_example_app() {
    let _ = example_app::app;
}

/// How long the instances may take to settle after an event or an outage.
const PATIENCE: Duration = Duration::from_secs(20);

async fn cluster(n: usize) -> Cluster {
    link_example_app();
    Cluster::start(n).await
}

#[tokio::test]
async fn commands_from_one_instance_run_on_all_three() {
    let cluster = cluster(3).await;
    let client = Client::new(cluster.http(0));
    let replies = join_all((0..300).map(|n| {
        let client = &client;
        async move {
            client
                .post("/echo", json!({"text": "spread", "n": n}))
                .await
        }
    }))
    .await;
    let mut executed_by = HashSet::new();
    for (n, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, 200, "request {n}: {}", reply.text);
        assert_eq!(reply.body["n"], n as u64 + 1);
        assert_eq!(
            reply.instance(),
            Some("i0"),
            "HTTP answered by the instance asked"
        );
        let by = reply
            .executed_by()
            .expect("x-cohort-executed-by")
            .to_owned();
        assert_eq!(reply.body["instance"], by.as_str());
        executed_by.insert(by);
    }
    let expected: HashSet<String> = ["i0", "i1", "i2"].map(String::from).into();
    assert_eq!(
        executed_by, expected,
        "every instance executed some commands"
    );
}

#[tokio::test]
async fn a_session_made_on_one_instance_works_on_the_others() {
    let cluster = cluster(3).await;
    let a = Client::new(cluster.http(0));
    let alice = json!({"username": "alice", "password": "pw-alice"});
    assert_eq!(a.post("/accounts", alice.clone()).await.status, 201);
    let login = a.post("/sessions", alice).await;
    assert_eq!(login.status, 200, "{}", login.text);
    for i in [1, 2] {
        let other = a.with_base(cluster.http(i));
        let me = other.get("/me").await;
        assert_eq!(me.status, 200, "instance i{i}: {}", me.text);
        assert_eq!(me.body, json!({"username": "alice"}));
        assert_eq!(me.instance(), Some(format!("i{i}").as_str()));
    }
    let logout = a.with_base(cluster.http(2)).delete("/sessions").await;
    assert_eq!(logout.status, 204);
    assert_eq!(a.get("/me").await.status, 401, "logged out everywhere");
}

/// The admin, signed in once, as a client of each of the three instances.
async fn signed_in_admins(cluster: &Cluster) -> Vec<Client> {
    let admin = Client::new(cluster.http(0));
    admin.sign_in_admin().await;
    (0..3).map(|i| admin.with_base(cluster.http(i))).collect()
}

#[tokio::test]
async fn concurrent_orders_never_oversell() {
    let cluster = cluster(3).await;
    let clients = signed_in_admins(&cluster).await;
    assert_eq!(
        clients[0]
            .put("/stock/widget", json!({"qty": 100}))
            .await
            .status,
        200
    );
    let replies = join_all((0..150).map(|n| {
        let client = &clients[n % 3];
        async move {
            client
                .post("/orders", json!({"sku": "widget", "qty": 1}))
                .await
        }
    }))
    .await;
    let mut statuses = BTreeMap::new();
    for reply in &replies {
        *statuses.entry(reply.status).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        BTreeMap::from([(201, 100), (409, 50)]),
        "exactly the stock is sold"
    );
    let ids: HashSet<u64> = replies
        .iter()
        .filter_map(|r| r.body["id"].as_u64())
        .collect();
    assert_eq!(ids.len(), 100, "every order has its own id");
    let stock = clients[1].get("/stock/widget").await;
    assert_eq!(stock.body["qty"], 0, "{}", stock.text);
}

#[tokio::test]
async fn the_instances_announce_the_order_event_and_agree_on_its_schema() {
    let (logs, _guard) = CapturedLogs::start();
    let cluster = cluster(2).await;
    drift_checked(&logs, "i1").await;
    let nats = async_nats::connect(cluster.nats.url()).await.expect("NATS");
    let (first, second) = (
        announced_events(&nats, "i0").await,
        announced_events(&nats, "i1").await,
    );
    assert_eq!(first, second, "one build, one table");
    let placed = first
        .iter()
        .find(|e| e["subject"] == "cohort.evt.*.order_placed")
        .unwrap_or_else(|| panic!("order_placed in {first:?}"));
    let mut consumers: Vec<&str> = placed["subscriptions"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    consumers.sort_unstable();
    assert_eq!(consumers, ["audit.count_order", "audit.hear_order"]);
    let ready = Client::new(cluster.http(1)).get("/readyz").await;
    assert_eq!(ready.text, r#"{"status":"ok"}"#, "no drift between the two");
}

#[tokio::test]
async fn each_order_is_audited_exactly_once_across_instances() {
    let cluster = cluster(3).await;
    let clients = signed_in_admins(&cluster).await;
    assert_eq!(
        clients[0]
            .put("/stock/gadget", json!({"qty": 1000}))
            .await
            .status,
        200
    );
    let orders = 60;
    let replies = join_all((0..orders).map(|n| {
        let client = &clients[n % 3];
        async move {
            client
                .post("/orders", json!({"sku": "gadget", "qty": 1}))
                .await
        }
    }))
    .await;
    assert!(replies.iter().all(|r| r.status == 201));
    let audit = wait_for_audit(&clients[2], orders as u64).await;
    let by_instance = audit["by_instance"].as_object().expect("by_instance");
    let total: u64 = by_instance.values().filter_map(Value::as_u64).sum();
    assert_eq!(total, orders as u64, "{audit}");
    assert!(
        by_instance.len() > 1,
        "more than one instance consumed: {audit}"
    );
    // The every-instance subscription: each instance hears each order.
    eventually(
        "every instance must hear every order",
        PATIENCE,
        async || {
            let audit = clients[0].get("/audit").await.body;
            let heard = audit["heard_by_instance"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            heard.len() == 3 && heard.values().all(|n| n.as_u64() == Some(orders as u64))
        },
    )
    .await;
    // Settled: no more deliveries beyond exactly once. A quiet period, not a wait for something:
    // a duplicate delivery would show within it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        clients[1].get("/audit").await.body["orders_seen"],
        orders as u64
    );
}

#[tokio::test]
async fn a_command_nobody_serves_is_503_at_once() {
    link_example_app();
    let cluster = Cluster::start_with(2, |_, config| {
        config.services = Some(vec!["accounts".into(), "orders".into(), "audit".into()]);
    })
    .await;
    let client = Client::new(cluster.http(0));
    let mut fastest = Duration::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        let reply = client
            .post("/echo", json!({"text": "anyone?", "n": 1}))
            .await;
        fastest = fastest.min(started.elapsed());
        assert_eq!(reply.status, 503, "{}", reply.text);
        assert_eq!(reply.body["code"], "no_responders");
        assert!(
            reply.body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("echo")),
            "{}",
            reply.text
        );
    }
    assert!(
        fastest < Duration::from_millis(100),
        "no waiting for a timeout: {fastest:?}"
    );
}

#[tokio::test]
async fn a_worker_without_http_runs_commands_for_the_others() {
    link_example_app();
    let mut cluster = Cluster::start_with(1, |_, config| {
        config.services = Some(vec!["accounts".into()]);
    })
    .await;
    let mut worker = cluster.config(1);
    worker.http_addr = None;
    worker.services = Some(vec!["echo".into()]);
    cluster.add(worker).await;
    let reply = Client::new(cluster.http(0))
        .post("/echo", json!({"text": "w", "n": 1}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.executed_by(), Some("i1"));
    assert_eq!(reply.instance(), Some("i0"));
}

#[tokio::test]
async fn nats_with_a_process_local_store_refuses_to_start() {
    link_example_app();
    let cluster = Cluster::start(0).await;
    let mut config = Config::default();
    config.http_addr = None;
    config.nats_url = Some(cluster.nats.url());
    config.cluster_key = Some(cluster.key.clone());
    let err = App::with_config(config.clone())
        .start()
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), "local_state_with_distributed_broker");
    assert!(err.message().contains("COHORT_REDIS_URL"), "{err}");
    let running = App::with_config(config)
        .allow_local_state()
        .start()
        .await
        .expect("starts when allowed");
    running.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn redis_outage_is_503_and_service_resumes() {
    let mut cluster = cluster(1).await;
    let client = Client::new(cluster.http(0));
    client.sign_in_admin().await;
    assert_eq!(client.put("/stock/x", json!({"qty": 1})).await.status, 200);
    cluster.redis.stop().await;
    let reply = client.get("/stock/x").await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert_eq!(reply.content_type(), Some("application/problem+json"));
    cluster.redis.restart().await;
    eventually(
        "service must resume when Redis returns",
        PATIENCE,
        async || client.get("/stock/x").await.status == 200,
    )
    .await;
    // The restarted Redis began empty: the account and its session went with it.
    client.sign_in_admin().await;
    assert_eq!(client.put("/stock/x", json!({"qty": 2})).await.status, 200);
}

#[tokio::test]
async fn the_first_instance_creates_the_streams_with_the_configured_retention() {
    link_example_app();
    let cluster = Cluster::start_with(1, |_, config| {
        config.event_retention = Duration::from_secs(3600);
    })
    .await;
    let client = async_nats::connect(cluster.nats.url())
        .await
        .expect("connect");
    let jetstream = async_nats::jetstream::new(client);
    for name in ["COHORT_EVENTS", "COHORT_DLQ"] {
        let mut stream = jetstream.get_stream(name).await.expect("the stream exists");
        let config = &stream.info().await.expect("stream info").config;
        assert_eq!(config.max_age, Duration::from_secs(3600), "{name}");
        assert_eq!(config.num_replicas, 1, "{name}");
    }
}

#[tokio::test]
async fn a_stored_event_carries_its_id_trace_sender_and_signature_only() {
    let cluster = cluster(1).await;
    let client = Client::new(cluster.http(0));
    client.sign_in_admin().await;
    client.place_one_order("wire").await;
    let placed = EventStreams::connect(&cluster.nats.url())
        .await
        .last_event("cohort.evt.orders.order_placed")
        .await;
    let mut names: Vec<&str> = placed
        .headers
        .iter()
        .map(|(name, _)| name.as_ref())
        .collect();
    names.sort_unstable();
    // No deadline (its handlers run whenever it is delivered), no service (the subject names
    // it), no session (a bearer secret kept for the stream's retention).
    assert_eq!(
        names,
        [
            "Cohort-Instance",
            "Cohort-Message-Id",
            "Cohort-Principal",
            "Cohort-Signature",
            "Nats-Msg-Id",
            "traceparent"
        ],
        "{:?}",
        placed.headers
    );
    assert_eq!(
        placed.headers.get("Nats-Msg-Id"),
        placed.headers.get("Cohort-Message-Id"),
        "JetStream deduplicates by the signed message id"
    );
}
