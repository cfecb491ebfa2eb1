//! An instance's life over real HTTP: start-up refuses a bad configuration, health and readiness
//! answer, and shutdown turns unready first and finishes the requests in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cohort::prelude::*;
use cohort::testing::{eventually, eventually_some};
use cohort_tests::{Client, Nothing, assert_problem, base_url, start_app, start_embedded};
use serde_json::json;

/// How many `nap` commands have started: a test waits for its request to be in flight.
static NAPS_STARTED: AtomicUsize = AtomicUsize::new(0);

/// A command that takes a while, to show shutdown waits for it.
#[command(service = "faults")]
#[http(POST, "/faults/nap")]
async fn nap(_ctx: Ctx, _input: Nothing) -> Result<Nothing, Error> {
    NAPS_STARTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    Ok(Nothing {})
}

async fn app() -> (cohort::Running, Client) {
    let running = start_embedded(|_| {}).await;
    let client = Client::new(base_url(&running));
    (running, client)
}

#[tokio::test]
async fn an_unknown_service_in_cohort_services_stops_start_up() {
    let configure = |config: &mut cohort::Config| {
        config.http_addr = None;
        config.services = Some(vec!["ordres".into()]);
    };
    let err = start_app(configure, |app| app)
        .await
        .err()
        .expect("refused");
    assert!(
        err.message().contains("ordres") && err.message().contains("orders"),
        "{err}"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let (running, client) = app().await;
    assert_eq!(client.get("/healthz").await.status, 200);
    assert_eq!(client.get("/readyz").await.status, 200);
    let openapi = client.get("/openapi.json").await;
    assert!(
        openapi.body["paths"]["/orders/{id}"]["get"].is_object(),
        "{}",
        openapi.text
    );
    running.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn shutdown_finishes_requests_in_flight() {
    let (running, client) = app().await;
    let base = base_url(&running);
    let slow = tokio::spawn(async move {
        let client = Client::new(base);
        client.post("/faults/nap", json!({})).await
    });
    eventually(
        "the nap request must reach its command before the shutdown",
        Duration::from_secs(10),
        async || NAPS_STARTED.load(Ordering::SeqCst) > 0,
    )
    .await;
    running.shutdown().await.expect("shuts down");
    let reply = slow.await.expect("the request task");
    assert_eq!(
        reply.status, 200,
        "the request in flight completes: {}",
        reply.text
    );
    let refused = reqwest::Client::new()
        .get(format!("{}/healthz", client.base()))
        .send()
        .await;
    assert!(refused.is_err(), "no new connections after shutdown");
}

#[tokio::test]
async fn readiness_turns_503_before_the_listener_closes() {
    let shutdown_delay = Duration::from_millis(500);
    let running = start_embedded(|config| config.shutdown_delay = shutdown_delay).await;
    let client = Client::new(base_url(&running));
    assert_eq!(client.get("/readyz").await.status, 200);
    let stopping = tokio::spawn(running.shutdown());
    let unready = eventually_some(
        "/readyz must turn 503 within the shutdown delay",
        shutdown_delay,
        async || {
            let reply = client.get("/readyz").await;
            (reply.status == 503).then_some(reply)
        },
    )
    .await;
    assert_problem(&unready, 503);
    let reply = client
        .post("/echo", json!({"text": "still served", "n": 1}))
        .await;
    assert_eq!(
        reply.status, 200,
        "the instance serves while the balancer catches up"
    );
    stopping.await.expect("shutdown task").expect("shuts down");
}
