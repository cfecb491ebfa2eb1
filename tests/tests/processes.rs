//! Real example-app processes against one NATS and one Redis: work spreads, a killed instance's
//! events are redelivered to the others, its callers learn at once that it is gone, and a rolling
//! restart under load loses nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cohort::testing::eventually;
use cohort_tests::books::AUDIT_CONSUMER;
use cohort_tests::jetstream::EventStreams;
use cohort_tests::process::AppProcess;
use cohort_tests::servers::Servers;
use cohort_tests::{Client, wait_for_audit};
use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::json;

#[tokio::test]
async fn two_processes_share_the_work() {
    let servers = Servers::start().await;
    let a = AppProcess::start("pa", true, &servers.env()).await;
    let _b = AppProcess::start("pb", false, &servers.env()).await;
    let client = Client::new(a.http.clone().expect("http"));
    let replies = join_all((0..100).map(|n| {
        let client = &client;
        async move { client.post("/echo", json!({"text": "p", "n": n})).await }
    }))
    .await;
    let executed: HashSet<&str> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text);
            r.executed_by().expect("executed-by")
        })
        .collect();
    assert_eq!(executed, HashSet::from(["pa", "pb"]));
}

#[tokio::test]
async fn events_held_by_a_killed_instance_are_redelivered_to_the_others() {
    let servers = Servers::start().await;
    let only = |services: &str| {
        let mut env = servers.env();
        env.push(("COHORT_SERVICES", services.to_owned()));
        env
    };
    // ka takes HTTP and commands; kb is the only audit instance, so it takes every event.
    let a = AppProcess::start("ka", true, &only("accounts,orders,echo")).await;
    let b = AppProcess::start("kb", false, &only("audit")).await;
    let client = Client::new(a.http.clone().expect("http"));
    client.sign_in_admin().await;
    assert_eq!(
        client.put("/stock/bolt", json!({"qty": 1000})).await.status,
        200
    );
    // Frozen, kb keeps its pull request open at the server, which goes on handing it events it
    // will never acknowledge: what an instance holds when it dies.
    b.signal("STOP").await;
    let orders = 40;
    for _ in 0..orders {
        assert_eq!(
            client
                .post("/orders", json!({"sku": "bolt", "qty": 1}))
                .await
                .status,
            201
        );
    }
    EventStreams::connect(&servers.nats.url())
        .await
        .wait_until_held(AUDIT_CONSUMER)
        .await;
    b.signal("KILL").await;
    let _c = AppProcess::start("kc", false, &only("audit")).await;
    let audit = wait_for_audit(&client, orders).await;
    assert_eq!(
        audit["by_instance"],
        json!({"kc": orders}),
        "the survivor counted them all: {audit}"
    );
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_a_rolling_restart_loses_no_request() {
    let servers = Servers::start().await;
    let a = AppProcess::start("ra", true, &servers.env()).await;
    let mut b = AppProcess::start("rb", false, &servers.env()).await;
    let client = Client::new(a.http.clone().expect("http"));
    client.sign_in_admin().await;
    assert_eq!(
        client
            .put("/stock/nut", json!({"qty": 100000}))
            .await
            .status,
        200
    );
    let run_by_b = Arc::new(AtomicUsize::new(0));
    let load = {
        let client = client.with_base(a.http.clone().expect("http"));
        let run_by_b = run_by_b.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                let batch = join_all(
                    (0..8).map(|_| client.post("/orders", json!({"sku": "nut", "qty": 1}))),
                )
                .await;
                let on_b = batch.iter().filter(|r| r.executed_by() == Some("rb"));
                run_by_b.fetch_add(on_b.count(), Ordering::SeqCst);
                statuses.extend(batch.into_iter().map(|r| r.status));
            }
            statuses
        })
    };
    let under_load = "rb must be running orders of the load before it is restarted";
    eventually(under_load, Duration::from_secs(3), async || {
        run_by_b.load(Ordering::SeqCst) > 0
    })
    .await;
    b.signal("TERM").await;
    assert_eq!(
        b.wait().await,
        Some(0),
        "SIGTERM exits 0 after finishing work in flight"
    );
    let _b2 = AppProcess::start("rb2", false, &servers.env()).await;
    let statuses = load.await.expect("load task");
    let placed = statuses.iter().filter(|s| **s == 201).count() as u64;
    assert!(placed > 0);
    assert!(
        statuses.iter().all(|s| *s == 201),
        "no request lost: {statuses:?}"
    );
    wait_for_audit(&client, placed).await;
}

/// `la` takes HTTP and runs no echo; `echoes` run the echo commands.
async fn echo_cluster(servers: &Servers, echoes: &[&str]) -> (AppProcess, Vec<AppProcess>) {
    let only = |services: &str| {
        let mut env = servers.env();
        env.push(("COHORT_SERVICES", services.to_owned()));
        env
    };
    let a = AppProcess::start("la", true, &only("accounts,orders,audit")).await;
    let mut executors = Vec::new();
    for id in echoes {
        executors.push(AppProcess::start(id, false, &only("echo")).await);
    }
    (a, executors)
}

/// Sends a slow echo through `a`, and returns it with the instance that reports progress on it.
async fn slow_echo_running(
    servers: &Servers,
    a: &AppProcess,
    wait_ms: u64,
) -> (tokio::task::JoinHandle<cohort_tests::Reply>, String) {
    let spy = async_nats::connect(servers.nats.url())
        .await
        .expect("a plain client");
    let mut replies = spy.subscribe("_INBOX.>").await.expect("subscribe");
    spy.flush().await.expect("flush");
    let client = Client::new(a.http.clone().expect("http"));
    let slow = tokio::spawn(async move {
        let input = json!({"text": "doomed", "n": 1, "wait_ms": wait_ms});
        client.post("/echo/slow", input).await
    });
    // Progress on the reply subject names the instance running the command.
    let progress = async {
        while let Some(message) = replies.next().await {
            let headers = message.headers.as_ref();
            let header = |name| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
            if header("Cohort-Status") == Some("100") {
                return header("Cohort-Instance").map(str::to_owned);
            }
        }
        None
    };
    let running_on = tokio::time::timeout(Duration::from_secs(10), progress)
        .await
        .expect("the slow echo must report progress")
        .expect("progress names its instance");
    (slow, running_on)
}

#[tokio::test]
async fn a_caller_learns_within_3_s_that_the_instance_running_its_command_was_killed() {
    let servers = Servers::start().await;
    let (a, executors) = echo_cluster(&servers, &["lb"]).await;
    let (slow, running_on) = slow_echo_running(&servers, &a, 60_000).await;
    assert_eq!(running_on, "lb");
    executors[0].signal("KILL").await;
    let killed_at = Instant::now();
    let reply = slow.await.expect("the request task");
    assert!(
        killed_at.elapsed() < Duration::from_secs(3),
        "the caller must learn it within 3 s, not after {:?}",
        killed_at.elapsed()
    );
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert_eq!(reply.body["code"], "executor_lost", "{}", reply.text);
}

#[tokio::test]
async fn an_idempotent_command_is_sent_again_when_the_instance_running_it_is_killed() {
    let servers = Servers::start().await;
    let (a, executors) = echo_cluster(&servers, &["lb", "lc"]).await;
    let (slow, running_on) = slow_echo_running(&servers, &a, 1_500).await;
    let (doomed, survivor) = match running_on.as_str() {
        "lb" => (&executors[0], "lc"),
        _ => (&executors[1], "lb"),
    };
    doomed.signal("KILL").await;
    let killed_at = Instant::now();
    let reply = slow.await.expect("the request task");
    assert_eq!(reply.status, 200, "sent again and answered: {}", reply.text);
    assert_eq!(reply.executed_by(), Some(survivor), "{}", reply.text);
    // 2.5 s of silence, then the command's 1.5 s on the other instance.
    assert!(
        killed_at.elapsed() < Duration::from_secs(6),
        "answered after {:?}",
        killed_at.elapsed()
    );
}
