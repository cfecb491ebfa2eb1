//! Prometheus metrics at `/metrics`, scraped after real requests, commands across instances and
//! events; and 503 problems that disclose nothing of the infrastructure behind them.

use std::sync::LazyLock;
use std::time::Duration;

use cohort::prelude::*;
use cohort::testing::{Cluster, RedisServer, eventually, eventually_some};
use cohort_tests::logs::CapturedLogs;
use cohort_tests::scrape::{next_minute_at_least, scrape};
use cohort_tests::{ANY_LOOPBACK_PORT, Client, Nothing, base_url, start_embedded};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;

/// How long a scrape may take to show what happened: events are delivered asynchronously.
const PATIENCE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
struct ItemId {
    id: u32,
}

/// An item, or a 404 for item 0; its route has a path parameter, so the raw path must never
/// become a label.
#[command(service = "metered", version = 1)]
#[http(GET, "/metered/items/{id}")]
async fn metered_item(_ctx: Ctx, input: ItemId) -> Result<ItemId, Error> {
    match input.id {
        0 => Err(Error::not_found("there is no item 0")),
        id => Ok(ItemId { id }),
    }
}

/// Counted by `tally`, which fails it when `fail` is set.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, Event)]
#[event(name = "metered_tally")]
struct Tally {
    fail: bool,
}

#[command(service = "metered", version = 1)]
#[http(POST, "/metered/tally")]
async fn emit_tally(ctx: Ctx, input: Tally) -> Result<Nothing, Error> {
    ctx.emit(&input).await?;
    Ok(Nothing {})
}

#[subscription(service = "metered")]
async fn tally(_ctx: Ctx, event: Tally) -> Result<(), Error> {
    match event.fail {
        true => Err(Error::unavailable("the tally refuses it")),
        false => Ok(()),
    }
}

/// Handled by `held` once the test lets it through.
#[derive(Debug, Clone, Deserialize, Serialize, Event)]
#[event(name = "metered_held")]
struct Held {}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
struct HeldCount {
    count: u32,
}

#[command(service = "metered", version = 1)]
#[http(POST, "/metered/held")]
async fn emit_held(ctx: Ctx, input: HeldCount) -> Result<Nothing, Error> {
    for _ in 0..input.count {
        ctx.emit(&Held {}).await?;
    }
    Ok(Nothing {})
}

/// Closed until the test opens it: the deliveries of `held` wait here.
static GATE: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(0));

#[subscription(service = "metered")]
async fn held(_ctx: Ctx, _event: Held) -> Result<(), Error> {
    let _pass = GATE
        .acquire()
        .await
        .map_err(|_| Error::internal("the gate closed"))?;
    Ok(())
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
struct LedgerKey {
    key: String,
}

/// Reads the state store, so that a Redis outage reaches the client.
#[command(service = "metered", version = 1)]
#[http(GET, "/metered/ledger/{key}")]
async fn ledger(ctx: Ctx, input: LedgerKey) -> Result<Option<u64>, Error> {
    ctx.state().get::<u64>(&input.key).await
}

fn requests(method: &str, route: &str, status: u16) -> String {
    format!(
        "http_server_request_duration_seconds_count{{http_request_method=\"{method}\",http_route=\"{route}\",http_response_status_code=\"{status}\"}}"
    )
}

fn commands(side: &str, command: &str, outcome: &str) -> String {
    format!(
        "cohort_command_{side}_duration_seconds_count{{command=\"metered.v1.{command}\",outcome=\"{outcome}\"}}"
    )
}

fn events(subscription: &str, outcome: &str) -> String {
    format!(
        "cohort_events_processed_total{{subscription=\"metered.{subscription}\",outcome=\"{outcome}\"}}"
    )
}

fn per_subscription(metric: &str, subscription: &str) -> String {
    format!("{metric}{{subscription=\"metered.{subscription}\"}}")
}

#[tokio::test]
async fn requests_and_commands_are_counted_by_route_template_status_and_outcome() {
    let running = start_embedded(|_| {}).await;
    let client = Client::new(base_url(&running));
    for id in [7, 8, 9] {
        assert_eq!(
            client.get(&format!("/metered/items/{id}")).await.status,
            200
        );
    }
    assert_eq!(client.get("/metered/items/0").await.status, 404);
    assert_eq!(client.get("/metered/items/seven").await.status, 422);

    let metrics = scrape(&format!("{}/metrics", client.base())).await;
    let route = "/metered/items/{id}";
    assert_eq!(metrics.of(&requests("GET", route, 200)), 3.0);
    assert_eq!(metrics.of(&requests("GET", route, 404)), 1.0);
    assert_eq!(metrics.of(&requests("GET", route, 422)), 1.0);
    assert_eq!(metrics.value(&requests("GET", route, 500)), None);
    for side in ["client", "server"] {
        assert_eq!(metrics.of(&commands(side, "metered_item", "ok")), 3.0);
        assert_eq!(
            metrics.of(&commands(side, "metered_item", "not_found")),
            1.0
        );
        assert_eq!(metrics.of(&commands(side, "metered_item", "invalid")), 1.0);
    }
    // Every route is there from the start, at zero, so that a rate has a beginning.
    assert_eq!(metrics.of(&requests("POST", "/metered/tally", 200)), 0.0);
    for raw in ["/metered/items/7", "/metered/items/seven"] {
        assert!(
            !metrics.0.contains(raw),
            "{raw} became a label:\n{}",
            metrics.0
        );
    }
    let build = format!(
        "cohort_build_info{{version=\"{}\",instance_id=\"{}\"}}",
        env!("CARGO_PKG_VERSION"),
        running.instance_id()
    );
    assert_eq!(metrics.of(&build), 1.0);
    assert_eq!(metrics.of("cohort_broker_connected"), 1.0);
    assert_eq!(metrics.of("cohort_state_store_connected"), 1.0);
}

#[tokio::test]
async fn events_redeliveries_and_dead_letters_are_counted() {
    let running = start_embedded(|config| {
        config.event_max_attempts = 2;
        config.event_backoff = vec![Duration::from_millis(10)];
    })
    .await;
    let client = Client::new(base_url(&running));
    for fail in [false, false, true] {
        let reply = client.post("/metered/tally", json!({ "fail": fail })).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let url = format!("{}/metrics", client.base());
    let dead_letters = per_subscription("cohort_events_dead_lettered_total", "tally");
    let metrics = eventually_some(
        "the failing tally must be dead-lettered",
        PATIENCE,
        async || {
            let metrics = scrape(&url).await;
            (metrics.value(&dead_letters) == Some(1.0)).then_some(metrics)
        },
    )
    .await;
    assert_eq!(metrics.of(&events("tally", "ok")), 2.0);
    assert_eq!(metrics.of(&events("tally", "unavailable")), 2.0);
    let redelivered = per_subscription("cohort_events_redelivered_total", "tally");
    assert_eq!(metrics.of(&redelivered), 1.0);
    // The embedded broker hands every event over at once: none waits.
    let pending = per_subscription("cohort_events_pending", "tally");
    assert_eq!(metrics.value(&pending), Some(0.0));
}

/// `i0` serves HTTP but runs only the echo service; `i1` runs the metered commands and
/// subscriptions. Each instance counts its own side.
#[tokio::test]
async fn commands_across_instances_are_counted_on_each_side_and_events_on_the_one_that_ran_them() {
    let cluster = Cluster::start_with(2, |i, config| {
        config.event_max_attempts = 2;
        if i == 0 {
            config.services = Some(vec!["echo".to_owned()]);
        }
    })
    .await;
    let (front, back) = (Client::new(cluster.http(0)), Client::new(cluster.http(1)));
    for id in [1, 2, 3, 4] {
        let reply = front.get(&format!("/metered/items/{id}")).await;
        assert_eq!(reply.executed_by(), Some("i1"), "{}", reply.text);
    }
    for fail in [false, true] {
        let reply = front.post("/metered/tally", json!({ "fail": fail })).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    let back_url = format!("{}/metrics", back.base());
    let dead_letters = per_subscription("cohort_events_dead_lettered_total", "tally");
    let on_back = eventually_some(
        "i1 must dead-letter the failing tally",
        PATIENCE,
        async || {
            let metrics = scrape(&back_url).await;
            (metrics.value(&dead_letters) == Some(1.0)).then_some(metrics)
        },
    )
    .await;
    let on_front = scrape(&format!("{}/metrics", front.base())).await;

    let route = "/metered/items/{id}";
    assert_eq!(on_front.of(&requests("GET", route, 200)), 4.0);
    assert_eq!(on_front.of(&commands("client", "metered_item", "ok")), 4.0);
    assert_eq!(
        on_front.value(&commands("server", "metered_item", "ok")),
        None
    );
    assert_eq!(on_back.of(&requests("GET", route, 200)), 0.0);
    assert_eq!(on_back.of(&commands("client", "metered_item", "ok")), 0.0);
    assert_eq!(on_back.of(&commands("server", "metered_item", "ok")), 4.0);
    assert_eq!(on_back.of(&commands("server", "emit_tally", "ok")), 2.0);

    assert_eq!(on_back.of(&events("tally", "ok")), 1.0);
    assert_eq!(on_back.of(&events("tally", "unavailable")), 2.0);
    let redelivered = per_subscription("cohort_events_redelivered_total", "tally");
    assert_eq!(on_back.of(&redelivered), 1.0);
    assert_eq!(on_front.value(&events("tally", "ok")), None);
    assert_eq!(on_front.value(&dead_letters), None);
    for metrics in [&on_front, &on_back] {
        assert_eq!(metrics.of("cohort_broker_connected"), 1.0);
        assert_eq!(metrics.of("cohort_state_store_connected"), 1.0);
    }
}

#[tokio::test]
async fn pending_events_are_read_from_the_consumer_when_scraped() {
    let cluster = Cluster::start(1).await;
    let client = Client::new(cluster.http(0));
    let url = format!("{}/metrics", client.base());
    let pending = per_subscription("cohort_events_pending", "held");
    assert_eq!(scrape(&url).await.of(&pending), 0.0);
    // An instance takes at most 64 deliveries of a subscription at once; the rest wait on NATS.
    let reply = client.post("/metered/held", json!({ "count": 67 })).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    eventually_some("3 events must wait on the consumer", PATIENCE, async || {
        scrape(&url).await.value(&pending).filter(|n| *n == 3.0)
    })
    .await;
    GATE.add_permits(1_000);
    let processed = events("held", "ok");
    eventually("every held event must be processed", PATIENCE, async || {
        scrape(&url).await.value(&processed) == Some(67.0)
    })
    .await;
    // A scrape asks the server for the pending count before it reads the counters: only one that
    // starts after the last event was processed must find none pending.
    assert_eq!(scrape(&url).await.of(&pending), 0.0);
}

#[tokio::test]
async fn metrics_off_serve_no_metrics() {
    let running = start_embedded(|config| config.metrics = false).await;
    let client = Client::new(base_url(&running));
    assert_eq!(client.get("/metered/items/1").await.status, 200);
    let reply = client.get("/metrics").await;
    assert_eq!(reply.status, 404, "{}", reply.text);
}

#[tokio::test]
async fn metrics_can_have_a_listener_of_their_own() {
    let running = start_embedded(|config| config.metrics_addr = ANY_LOOPBACK_PORT).await;
    let client = Client::new(base_url(&running));
    assert_eq!(client.get("/metered/items/1").await.status, 200);
    assert_eq!(client.get("/metrics").await.status, 404);
    let addr = running.metrics_addr().expect("a metrics listener");
    assert_ne!(Some(addr), running.http_addr());
    let metrics = scrape(&format!("http://{addr}/metrics")).await;
    assert_eq!(
        metrics.of(&requests("GET", "/metered/items/{id}", 200)),
        1.0
    );
    running.shutdown().await.expect("both listeners stop");
}

#[tokio::test]
async fn a_503_names_what_is_unavailable_and_the_log_has_the_cause() {
    let logs = CapturedLogs::everywhere();
    let mut redis = RedisServer::start().await;
    let running = start_embedded(|config| config.redis_url = Some(redis.url())).await;
    let client = Client::new(base_url(&running));
    assert_eq!(client.get("/metered/ledger/ledger-7f3a").await.status, 200);
    redis.stop().await;

    let reply = client.get("/metered/ledger/ledger-7f3a").await;
    cohort_tests::assert_problem(&reply, 503);
    assert_eq!(
        reply.body["detail"], "the state store is unavailable",
        "{}",
        reply.text
    );
    assert_eq!(
        reply.body["code"], "state_store_unavailable",
        "{}",
        reply.text
    );
    let trace_id = reply.body["trace_id"].as_str().unwrap_or_default();
    assert!(
        trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        reply.text
    );
    let port = redis.port().to_string();
    for secret in [
        "redis",
        "127.0.0.1",
        port.as_str(),
        "ledger-7f3a",
        "metered:",
        "refused",
    ] {
        assert!(
            !reply.text.to_lowercase().contains(secret),
            "{secret} in {}",
            reply.text
        );
    }

    let logs = logs.text();
    let logged = logs
        .lines()
        // The request's own warning, not the outage's (logged once, inside the first failure's span).
        .find(|line| {
            line.contains(trace_id) && line.contains("WARN") && !line.contains("cohort::outage")
        })
        .unwrap_or_else(|| panic!("no warning with the trace id {trace_id}:\n{logs}"));
    assert!(logged.contains("WARN"), "{logged}");
    for cause in [
        "on Redis at `redis://127.0.0.1:",
        port.as_str(),
        "ledger-7f3a",
    ] {
        assert!(
            logged.contains(cause),
            "the log must have {cause}: {logged}"
        );
    }
    let metrics = scrape(&format!("{}/metrics", client.base())).await;
    assert_eq!(metrics.of("cohort_state_store_connected"), 0.0);
    let errors = "cohort_state_errors_total{db_operation_name=\"get\",error_type=\"unavailable\"}";
    assert_eq!(metrics.of(errors), 1.0);
}

/// `series` of the example app's once-a-minute task.
fn audit_task(metric: &str) -> String {
    format!("{metric}{{task=\"audit.take_snapshot\"}}")
}

#[tokio::test]
async fn a_task_shows_its_next_run_and_nothing_of_runs_it_did_not_make() {
    let tick = next_minute_at_least(Duration::from_secs(10)).await;
    let running = start_embedded(|_| {}).await;
    let url = format!("{}/metrics", base_url(&running));
    let next = audit_task("cohort_task_next_run_timestamp_seconds");
    let metrics = eventually_some("the next run must be known", PATIENCE, async || {
        let metrics = scrape(&url).await;
        metrics.value(&next).is_some().then_some(metrics)
    })
    .await;
    assert_eq!(metrics.of(&next) * 1000.0, tick as f64);
    let runs = "cohort_task_runs_total{task=\"audit.take_snapshot\",outcome=\"ok\"}";
    for (series, value) in [
        (audit_task("cohort_task_running"), 0.0),
        (audit_task("cohort_task_duration_seconds_count"), 0.0),
        (runs.to_owned(), 0.0),
    ] {
        assert_eq!(metrics.of(&series), value, "{series}");
    }
    let last = audit_task("cohort_task_last_run_timestamp_seconds");
    assert_eq!(metrics.value(&last), None, "{}", metrics.0);
}
