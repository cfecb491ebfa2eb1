//! Effects that add up under faults: the example shop as real example-app processes on one NATS and
//! one Redis (or a Redis Cluster), under a load of orders, while an instance is killed, NATS or
//! Redis goes away, Redis freezes, or the cluster fails a master over to its replica.
//!
//! While a fault lasts, every request is answered within seconds, never at a far deadline. Once
//! it is over, the books balance exactly: every idempotency key the load sent is confirmed as one
//! order, stored as confirmed, its stock taken once and its event counted once. The load retries
//! a call that got no answer or a 503 with the same `Idempotency-Key`, as a careful client would,
//! so that every call ends confirmed and the counts can be exact.
//!
//! The tests take turns: their time bounds hold on a machine running one deployment, not five.

use std::time::{Duration, Instant};

use cohort::ClusterKey;
use cohort::testing::{NatsServer, RedisCluster};
use cohort_tests::Client;
use cohort_tests::books::{orders, unsettled};
use cohort_tests::faults::{
    Answers, ORDER_OR_503, SKUS, assert_in_time_and_balanced, load_of_orders, open_books,
    open_books_on, scene, wait_for_warm_up, warm_load_on_all,
};
use cohort_tests::load::{Call, Fault, Load, Plan};
use cohort_tests::process::AppProcess;
use cohort_tests::servers::{Servers, deployment_env};
use reqwest::Method;
use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::sleep;

/// Held by the test that runs.
static TURN: Mutex<()> = Mutex::const_new(());

/// Without a fault on the way of the orders: the order.
const ORDER: Answers = Answers {
    what: "201",
    expected: |a| a.status == Some(201),
};

/// To one key sent many times: its order, replayed, or a 409 saying that the key is in use.
const ORDER_OR_KEY_IN_USE: Answers = Answers {
    what: "201, or a 409 saying that the key is in use",
    expected: |a| match a.status {
        Some(201) => true,
        Some(409) => a.code() != Some("insufficient_stock"),
        _ => false,
    },
};

/// A key in the slot of the orders service's state, outbox and markers in a Redis Cluster.
const ORDERS_SLOT: &str = "{cohort:orders}";
/// How many orders the events test places.
const EVENTS: usize = 300;

#[tokio::test]
async fn orders_add_up_when_an_executing_instance_is_killed() {
    let _turn = TURN.lock().await;
    let servers = Servers::start().await;
    let mut instances = AppProcess::start_all(&["k1", "k2", "k3"], &servers.env()).await;
    let books = open_books(&servers, &instances[0]).await;
    // k3 only runs commands: every request has an HTTP instance that survives.
    let targets = vec![instances[0].url(), instances[1].url()];
    let load = load_of_orders(&books, targets, Duration::from_secs(6), "kill");
    wait_for_warm_up(&load).await;
    let what = "k3 must run orders of the load before it is killed";
    load.wait_for(what, Duration::from_secs(10), |a| {
        a.executed_by.as_deref() == Some("k3")
    })
    .await;
    let killed = Instant::now();
    instances[2].kill().await;
    instances[2].restart().await;
    let record = load.finish().await;
    let scene = scene("k3 was killed", &record, killed);
    assert_in_time_and_balanced(&books, &record, &[Fault::at(killed)], &ORDER_OR_503, &scene).await;
}

#[tokio::test]
async fn orders_add_up_when_nats_stops_for_three_seconds() {
    let _turn = TURN.lock().await;
    let mut servers = Servers::start().await;
    let instances = AppProcess::start_all(&["n1", "n2", "n3"], &servers.env()).await;
    let books = open_books(&servers, &instances[0]).await;
    let load = warm_load_on_all(&books, &instances, Duration::from_secs(8), "nats").await;
    let stopped = Instant::now();
    servers.nats.stop().await;
    sleep(Duration::from_secs(3)).await;
    servers.nats.restart().await;
    // A call in flight may still succeed once NATS is back: its reply may have waited for it.
    let outage = Fault::lasting(stopped, Instant::now());
    let record = load.finish().await;
    let scene = scene("NATS stopped", &record, stopped);
    assert_in_time_and_balanced(&books, &record, &[outage], &ORDER_OR_503, &scene).await;
}

#[tokio::test]
async fn orders_add_up_when_redis_stops_for_five_seconds() {
    let _turn = TURN.lock().await;
    let mut servers = Servers::start_with_durable_redis().await;
    let instances = AppProcess::start_all(&["r1", "r2", "r3"], &servers.env()).await;
    let books = open_books(&servers, &instances[0]).await;
    let load = warm_load_on_all(&books, &instances, Duration::from_secs(10), "redis-stop").await;
    let stopped = Instant::now();
    servers.redis.terminate().await;
    sleep(Duration::from_secs(5)).await;
    servers.redis.restart().await;
    let record = load.finish().await;
    let scene = scene("Redis stopped", &record, stopped);
    assert_in_time_and_balanced(
        &books,
        &record,
        &[Fault::at(stopped)],
        &ORDER_OR_503,
        &scene,
    )
    .await;
}

#[tokio::test]
async fn orders_add_up_when_the_redis_cluster_master_of_orders_is_killed() {
    let _turn = TURN.lock().await;
    let (nats, mut redis) = tokio::join!(NatsServer::start(), RedisCluster::start_with_replicas(3));
    let env = deployment_env(&nats, &redis.url(), &ClusterKey::random());
    let instances = AppProcess::start_all(&["c1", "c2"], &env).await;
    let books = open_books_on(&nats, &instances[0]).await;
    let load = warm_load_on_all(&books, &instances, Duration::from_secs(10), "failover").await;
    let master = redis.master_of(ORDERS_SLOT).await;
    redis.until_replicated(master).await;
    let killed = Instant::now();
    redis.kill(master).await;
    let what = "a replica must take over the slot of orders";
    let taken_over = async || redis.master_of(ORDERS_SLOT).await != master;
    cohort::testing::eventually(what, Duration::from_secs(30), taken_over).await;
    redis.until_ok().await;
    let recovered = Instant::now();
    let failover = Fault::lasting(killed, recovered);
    let record = load.finish().await;
    let scene = format!(
        "{} (the failover took {:?})",
        scene("the Redis master of orders was killed", &record, killed),
        recovered - killed
    );
    assert_in_time_and_balanced(&books, &record, &[failover], &ORDER_OR_503, &scene).await;
}

#[tokio::test]
async fn orders_add_up_when_redis_freezes_for_five_seconds() {
    let _turn = TURN.lock().await;
    let servers = Servers::start().await;
    let instances = AppProcess::start_all(&["z1", "z2", "z3"], &servers.env()).await;
    let books = open_books(&servers, &instances[0]).await;
    let load = warm_load_on_all(&books, &instances, Duration::from_secs(10), "redis-freeze").await;
    let frozen = Instant::now();
    servers.redis.freeze().await;
    sleep(Duration::from_secs(5)).await;
    servers.redis.thaw().await;
    let record = load.finish().await;
    let scene = scene("Redis froze", &record, frozen);
    assert_in_time_and_balanced(&books, &record, &[Fault::at(frozen)], &ORDER_OR_503, &scene).await;
}

#[tokio::test]
async fn each_event_counts_once_when_every_subscriber_is_killed_mid_stream() {
    let _turn = TURN.lock().await;
    let servers = Servers::start().await;
    let only = |services: &str| {
        let mut env = servers.env();
        env.push(("COHORT_SERVICES", services.to_owned()));
        env
    };
    // e1 takes the orders; e2 and e3 run the audit's subscriptions, and nothing else does.
    let e1 = AppProcess::start("e1", true, &only("accounts,orders,echo")).await;
    let audit = only("audit");
    let (mut e2, mut e3) = tokio::join!(
        AppProcess::start("e2", false, &audit),
        AppProcess::start("e3", false, &audit),
    );
    let books = open_books(&servers, &e1).await;
    let plan = Plan {
        targets: vec![e1.url()],
        clients: 6,
        calls: EVENTS,
        duration: Duration::from_secs(30),
        pace: Duration::ZERO,
        give_up_after: Duration::from_secs(5),
        unsettled,
        retry_for: Duration::from_secs(5),
    };
    // Frozen while the orders are placed, the subscribers thaw to a backlog: they die busy,
    // events in hand, not idle between two.
    tokio::join!(e2.signal("STOP"), e3.signal("STOP"));
    let record = Load::start(plan, orders(&books, &SKUS, "events"))
        .finish()
        .await;
    tokio::join!(e2.signal("CONT"), e3.signal("CONT"));
    // Killed as soon as the audit has counted some of the backlog: polled without a pause, since
    // the thawed subscribers count the whole backlog within tens of milliseconds.
    let client = Client::new(e1.url());
    let counting = async {
        loop {
            let seen = client.get("/audit").await.body["orders_seen"].as_u64();
            if let Some(seen) = seen.filter(|seen| *seen > 0) {
                return seen;
            }
        }
    };
    let seen_before = tokio::time::timeout(Duration::from_secs(10), counting)
        .await
        .expect("the thawed audit counts within 10 s");
    tokio::join!(e2.kill(), e3.kill());
    assert!(
        seen_before < EVENTS as u64,
        "the subscribers must die in the middle of the events, not after {seen_before} of {EVENTS}"
    );
    tokio::join!(e2.restart(), e3.restart());
    assert_eq!(record.outcomes().len(), EVENTS, "{}", record.summary());
    let scene = format!("the subscribers were killed once orders_seen was {seen_before}");
    assert_in_time_and_balanced(&books, &record, &[], &ORDER, &scene).await;
}

#[tokio::test]
async fn one_idempotency_key_sent_twenty_times_at_once_makes_one_order() {
    let _turn = TURN.lock().await;
    let servers = Servers::start().await;
    let instances = AppProcess::start_all(&["d1", "d2", "d3"], &servers.env()).await;
    let books = open_books(&servers, &instances[0]).await;
    let plan = Plan {
        targets: instances.iter().map(AppProcess::url).collect(),
        clients: 20,
        calls: 20,
        duration: Duration::from_secs(10),
        pace: Duration::ZERO,
        give_up_after: Duration::from_secs(5),
        unsettled: |_| false,
        retry_for: Duration::ZERO,
    };
    let cookie = books.cookie();
    let same_order = move |_| Call {
        method: Method::POST,
        path: "/orders".to_owned(),
        body: json!({"sku": "bolt", "qty": 2}),
        idempotency_key: Some("one-order".to_owned()),
        cookie: cookie.clone(),
    };
    let record = Load::start(plan, same_order).finish().await;
    let scene = "one key sent 20 times at once";
    assert_in_time_and_balanced(&books, &record, &[], &ORDER_OR_KEY_IN_USE, scene).await;
}
