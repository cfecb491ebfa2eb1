//! The live dashboard at `/_cohort`: off by default, guarded in the example app, and in a
//! cluster, loaded in headless Chromium, showing every instance, their commands and the
//! subscriptions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cohort::prelude::*;
use cohort::testing::{Cluster, eventually_some};
use cohort_tests::browser::{dom_of, screenshot, table_rows};
use cohort_tests::scrape::next_minute_at_least;
use cohort_tests::{ANY_LOOPBACK_PORT, Client, Nothing, start_embedded};
use reqwest::Method;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// An event its subscription can never handle: each one goes to the dead letters.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
#[event(name = "doomed")]
struct Doomed {
    n: u64,
}

#[command(service = "doomed")]
async fn doom(ctx: Ctx, input: Doomed) -> Result<Nothing, Error> {
    ctx.emit(&input).await?;
    Ok(Nothing {})
}

#[subscription(service = "doomed")]
async fn refuse_doomed(_ctx: Ctx, _event: Doomed) -> Result<(), Error> {
    Err(Error::invalid("n", "no doomed event is ever handled"))
}

/// The dead letters `data` shows for the subscription `subscription`.
fn dead_letters_of(data: &Value, subscription: &str) -> Option<u64> {
    data["subscriptions"]
        .as_array()?
        .iter()
        .find(|s| s["subscription"] == subscription)?["dead_letters"]
        .as_u64()
}

/// How long the instances may take to show what they did.
const PATIENCE: Duration = Duration::from_secs(20);

/// Where the screenshot goes when this variable names a file (the guide's is made this way).
const SCREENSHOT_TO: &str = "DASHBOARD_SCREENSHOT";

/// Naming the example app's code keeps its registrations linked into this test binary.
fn link_example_app() {
    let _ = example_app::app;
}

/// Some work for the dashboard to show: echoes (one of them refused) through `client`'s
/// instance, and orders, whose events the audit subscriptions consume.
async fn drive(client: &Client, echoes: usize) {
    for n in 0..echoes {
        let echoed = client.post("/echo", json!({"text": "hi", "n": n})).await;
        assert_eq!(echoed.status, 200, "{}", echoed.text);
    }
    let refused = client.post("/echo", json!({"text": 5})).await;
    assert_eq!(refused.status, 422, "{}", refused.text);
}

/// Echoes through each of `bases` in turn while `on`, each in a trace of its own.
async fn keep_echoing(bases: [String; 2], on: Arc<AtomicBool>) {
    let clients = bases.map(Client::new);
    for n in 0_usize.. {
        if !on.load(Ordering::Relaxed) {
            break;
        }
        // Spread over the whole range, like the random ids of real traces.
        let trace_id = (n as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
        let traceparent = format!("00-{trace_id:032x}-00f067aa0ba902b7-01");
        let body = json!({"text": "load", "n": n}).to_string();
        let headers = [("traceparent", traceparent.as_str())];
        let echoed = clients[n % 2]
            .send_with(Method::POST, "/echo", Some(body), &headers)
            .await;
        assert_eq!(echoed.status, 200, "{}", echoed.text);
    }
}

/// Echoes with a trace of their own through `client`'s instance until one runs on `instance`;
/// returns its trace id and how many echoes that took.
async fn traced_echo_run_on(client: &Client, instance: &str) -> (String, u64) {
    for n in 0_u32.. {
        let trace_id = format!("{n:032x}").replace('0', "a");
        let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
        let body = json!({"text": "traced", "n": n}).to_string();
        let headers = [("traceparent", traceparent.as_str())];
        let echoed = client
            .send_with(Method::POST, "/echo", Some(body), &headers)
            .await;
        assert_eq!(echoed.status, 200, "{}", echoed.text);
        if echoed.executed_by() == Some(instance) {
            return (trace_id, u64::from(n) + 1);
        }
    }
    unreachable!("the loop ends when an echo runs on {instance}")
}

async fn place_orders(client: &Client, n: usize) {
    client.sign_in_admin().await;
    let stocked = client.put("/stock/lamp", json!({"qty": 100})).await;
    assert_eq!(stocked.status, 200, "{}", stocked.text);
    for _ in 0..n {
        let placed = client
            .post("/orders", json!({"sku": "lamp", "qty": 1}))
            .await;
        assert_eq!(placed.status, 201, "{}", placed.text);
    }
}

/// The requests `data` counts for the command `command` on `instance`.
fn requests_of(data: &Value, instance: &str, command: &str) -> u64 {
    data["commands"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["instance"] == instance && c["command"] == command)
        .filter_map(|c| c["requests"].as_u64())
        .sum()
}

#[tokio::test]
async fn a_browser_sees_both_instances_their_commands_and_the_subscriptions() {
    link_example_app();
    let cluster = Cluster::start_with(2, |_, config| config.dashboard = true).await;
    let (first, second) = (Client::new(cluster.http(0)), Client::new(cluster.http(1)));
    drive(&first, 30).await;
    drive(&second, 30).await;
    place_orders(&first, 3).await;
    let (traced, traced_echoes) = traced_echo_run_on(&first, "i0").await;
    for n in 0..2 {
        let doomed = cluster.instance(0).call::<doom>(Doomed { n }).await;
        doomed.expect("the doomed event is published");
    }

    // Each instance ran echoes: commands are spread over the instances whichever one was asked.
    let reader = Client::new(cluster.http(0));
    let data = eventually_some("both instances report their echoes", PATIENCE, async || {
        let data = reader.get("/_cohort/data").await.body;
        let ran = ["i0", "i1"].map(|i| requests_of(&data, i, "echo.v1.echo"));
        let dead = dead_letters_of(&data, "doomed.refuse_doomed");
        (ran.iter().all(|&n| n > 0) && dead == Some(2)).then_some(data)
    })
    .await;
    assert_eq!(data["instance"], "i0");
    assert_eq!(data["instances"], json!(["i0", "i1"]));
    assert_eq!(data["problems"], json!([]), "{data}");
    let echoes =
        requests_of(&data, "i0", "echo.v1.echo") + requests_of(&data, "i1", "echo.v1.echo");
    assert_eq!(
        echoes,
        62 + traced_echoes,
        "every echo, refused ones included, counted once: {data}"
    );

    let url = format!("{}/_cohort", cluster.http(0));
    let dom = dom_of(&url).await;
    assert!(
        dom.contains("updated "),
        "the script refreshed the page: {dom}"
    );
    let instances = table_rows(&dom, "instances");
    let ids: Vec<&str> = instances.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(ids, ["i0 (this one)", "i1"], "{dom}");
    let commands = table_rows(&dom, "commands");
    for instance in ["i0", "i1"] {
        let echo = commands
            .iter()
            .find(|row| row[0] == "echo.v1.echo" && row[1] == instance)
            .unwrap_or_else(|| panic!("no echo row for {instance}: {commands:?}"));
        let requests: u64 = echo[3].parse().expect("a count of requests");
        assert!(requests > 0, "{instance} shows no echo: {echo:?}");
    }
    let errors: u64 = commands
        .iter()
        .filter(|row| row[0] == "echo.v1.echo")
        .map(|row| row[4].parse::<u64>().expect("a count of errors"))
        .sum();
    assert_eq!(errors, 2, "the two refused echoes: {commands:?}");
    let subscriptions = table_rows(&dom, "subscriptions");
    let count_order = subscriptions
        .iter()
        .find(|row| row[0] == "audit.count_order")
        .unwrap_or_else(|| panic!("no audit.count_order row: {subscriptions:?}"));
    assert_eq!(count_order[1], "order_placed");
    assert_eq!(count_order[5], "0", "no dead letters: {count_order:?}");
    let doomed = subscriptions
        .iter()
        .find(|row| row[0] == "doomed.refuse_doomed")
        .unwrap_or_else(|| panic!("no doomed.refuse_doomed row: {subscriptions:?}"));
    assert_eq!(
        doomed[5], "2",
        "both doomed events dead-lettered: {doomed:?}"
    );
    let tasks = table_rows(&dom, "tasks");
    let snapshot = tasks
        .iter()
        .find(|row| row[0] == "audit.take_snapshot")
        .unwrap_or_else(|| panic!("no audit.take_snapshot row: {tasks:?}"));
    assert_eq!(snapshot[1], "every 1m", "{snapshot:?}");
    assert_ne!(snapshot[2], "–", "its next run is known: {snapshot:?}");
    let recent = table_rows(&dom, "recent");
    assert!(
        recent
            .iter()
            .any(|row| row[1] == traced && row[2] == "echo.echo" && row[3] == "200"),
        "the traced echo that i0 ran, {traced}: {recent:?}"
    );

    // Under load, so that the rates show.
    let loading = Arc::new(AtomicBool::new(true));
    let load = tokio::spawn(keep_echoing(
        [cluster.http(0), cluster.http(1)],
        loading.clone(),
    ));
    let shot = tempfile::tempdir().expect("a directory");
    let png = shot.path().join("dashboard.png");
    screenshot(&url, &png, 1280, 1200).await;
    loading.store(false, Ordering::Relaxed);
    load.await.expect("the load ran");
    let image = std::fs::read(&png).expect("the screenshot");
    assert!(image.starts_with(b"\x89PNG"), "a PNG");
    if let Ok(to) = std::env::var(SCREENSHOT_TO) {
        std::fs::write(&to, &image).expect("the screenshot is kept");
    }
}

#[tokio::test]
async fn the_dashboard_is_off_by_default() {
    let running = start_embedded(|_| {}).await;
    let client = Client::new(cohort_tests::base_url(&running));
    for path in ["/_cohort", "/_cohort/data"] {
        let reply = client.get(path).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.text);
    }
}

#[tokio::test]
async fn the_example_app_shows_the_dashboard_to_its_admins_only() {
    let running = example_app::app()
        .expect("the example app")
        .http_addr(ANY_LOOPBACK_PORT)
        .start()
        .await
        .expect("the example app starts");
    let base = cohort_tests::base_url(&running);
    for path in ["/_cohort", "/_cohort/data"] {
        let anonymous = Client::new(&base).get(path).await;
        assert_eq!(anonymous.status, 401, "{path}: {}", anonymous.text);
        assert_eq!(anonymous.body["code"], "unauthorized");

        let customer = Client::new(&base);
        customer.sign_in_as("ada").await;
        let refused = customer.get(path).await;
        assert_eq!(refused.status, 403, "{path}: {}", refused.text);
        assert_eq!(refused.body["code"], "forbidden");

        let admin = Client::new(&base);
        admin.sign_in_admin().await;
        let shown = admin.get(path).await;
        assert_eq!(shown.status, 200, "{path}: {}", shown.text);
        assert_eq!(shown.header("cache-control"), Some("no-store"));
    }
}

#[tokio::test]
async fn an_embedded_instance_counts_its_own_commands() {
    let running = start_embedded(|config| config.dashboard = true).await;
    let client = Client::new(cohort_tests::base_url(&running));
    drive(&client, 5).await;
    let (traced, traced_echoes) = traced_echo_run_on(&client, running.instance_id()).await;
    assert_eq!(traced_echoes, 1, "one instance runs every command");
    place_orders(&client, 2).await;
    let doomed = running.call::<doom>(Doomed { n: 1 }).await;
    doomed.expect("the doomed event is published");

    let data = eventually_some("the doomed event is dead-lettered", PATIENCE, async || {
        let data = client.get("/_cohort/data").await.body;
        (dead_letters_of(&data, "doomed.refuse_doomed") == Some(1)).then_some(data)
    })
    .await;
    let id = running.instance_id();
    assert_eq!(data["instances"], json!([id]));
    let echo = data["commands"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["command"] == "echo.v1.echo"))
        .unwrap_or_else(|| panic!("no echo: {data}"));
    assert_eq!(echo["requests"], 7, "{echo}");
    assert_eq!(echo["errors"], 1, "{echo}");
    assert!(
        echo["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("422:")),
        "{echo}"
    );
    assert!(echo["average_nanos"].as_u64().is_some_and(|n| n > 0));
    let subscriptions: Vec<&str> = data["subscriptions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["subscription"].as_str())
        .collect();
    assert_eq!(
        subscriptions,
        [
            "audit.count_order",
            "audit.hear_order",
            "doomed.refuse_doomed"
        ]
    );
    let recent = data["recent"].as_array().expect("recent commands");
    assert_eq!(recent[0]["command"], "doom", "newest first: {data}");
    assert_eq!(
        recent[0]["status"], 200,
        "the command's own status, not the route's 201"
    );
    let refused = recent
        .iter()
        .find(|r| r["status"] == 422)
        .unwrap_or_else(|| panic!("the refused echo: {data}"));
    assert_eq!(refused["command"], "echo");
    // An error reply names a trace (a 500 is logged under it), which starts one if need be.
    let trace = refused["trace_id"].as_str().unwrap_or_default();
    assert!(
        trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()),
        "{refused}"
    );
    let echoed = recent
        .iter()
        .find(|r| r["trace_id"] == traced.as_str())
        .unwrap_or_else(|| panic!("the traced echo, {traced}: {data}"));
    assert_eq!(
        (&echoed["command"], &echoed["status"]),
        (&json!("echo"), &json!(200))
    );
}

#[tokio::test]
async fn the_data_lists_the_tasks_this_instance_runs() {
    let tick = next_minute_at_least(Duration::from_secs(10)).await;
    let running = start_embedded(|config| config.dashboard = true).await;
    let client = Client::new(cohort_tests::base_url(&running));
    let tasks = eventually_some("the next run is known", PATIENCE, async || {
        let data = client.get("/_cohort/data").await.body;
        let tasks = data["tasks"].clone();
        (!tasks[0]["next_run"].is_null()).then_some(tasks)
    })
    .await;
    let snapshot = json!({
        "task": "audit.take_snapshot",
        "schedule": "every 1m",
        "next_run": tick,
        "last_run": null,
        "last_outcome": null,
        "last_error": null,
        "runs": 0,
        "running": false,
    });
    assert_eq!(tasks, json!([snapshot]));
}

#[tokio::test]
async fn a_broker_that_does_not_answer_leaves_the_data_incomplete_within_seconds() {
    link_example_app();
    let mut cluster = Cluster::start_with(1, |_, config| config.dashboard = true).await;
    let client = Client::new(cluster.http(0));

    cluster.nats.freeze().await;
    let asked = std::time::Instant::now();
    let frozen = client.get("/_cohort/data").await;
    let took = asked.elapsed();
    cluster.nats.thaw().await;
    assert_eq!(frozen.status, 200, "{}", frozen.text);
    assert!(took < Duration::from_secs(4), "answered in {took:?}");
    let problems = frozen.body["problems"].to_string();
    assert!(
        problems.contains("the backlog of `audit__count_order` did not come within 2s"),
        "{problems}"
    );
    assert_eq!(frozen.body["instances"], json!(["i0"]), "{}", frozen.text);

    cluster.nats.stop().await;
    let stopped = eventually_some("the instance sees NATS gone", PATIENCE, async || {
        let data = client.get("/_cohort/data").await.body;
        data["problems"]
            .to_string()
            .contains("cannot ask the instances for their stats")
            .then_some(data)
    })
    .await;
    assert_eq!(stopped["commands"], json!([]), "{stopped}");
}
