//! The example app over real HTTP, one embedded instance: every endpoint and every error case.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cohort::prelude::*;
use cohort::state::{MemoryStore, StateStore};
use cohort::testing::{eventually, eventually_ok, eventually_some};
use cohort_tests::{Client, base_url, start_embedded, wait_for_audit};
use reqwest::Method;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
struct Nothing {}

/// A command that panics, to show a panic is a 500 and the instance goes on serving.
#[command(service = "faults")]
#[http(POST, "/faults/panic")]
async fn panics(_ctx: Ctx, _input: Nothing) -> Result<Nothing, Error> {
    panic!("the secret detail that must not leak");
}

/// A command whose unexpected error must be logged, not sent.
#[command(service = "faults")]
#[http(POST, "/faults/internal")]
async fn fails(_ctx: Ctx, _input: Nothing) -> Result<Nothing, Error> {
    Err(Error::internal("database password rejected"))
}

/// A command slower than its own timeout.
#[command(service = "faults", timeout = "100ms")]
#[http(POST, "/faults/slow")]
async fn too_slow(_ctx: Ctx, _input: Nothing) -> Result<Nothing, Error> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Nothing {})
}

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

/// What a command saw of its trace and deadline.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
struct Seen {
    trace_id: String,
    deadline_ms: Option<u64>,
}

fn seen(ctx: &Ctx) -> Seen {
    let since_epoch = |at: std::time::SystemTime| at.duration_since(std::time::UNIX_EPOCH).ok();
    Seen {
        trace_id: ctx.trace_id().to_owned(),
        deadline_ms: ctx
            .deadline()
            .and_then(since_epoch)
            .map(|d| d.as_millis() as u64),
    }
}

/// Called by `context_chain`, with a timeout longer than its caller's.
#[command(service = "faults", timeout = "60s")]
async fn inner_context(ctx: Ctx, _input: Nothing) -> Result<Seen, Error> {
    Ok(seen(&ctx))
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
struct Chain {
    outer: Seen,
    inner: Seen,
}

/// What a command and the command it calls see of their trace and deadline.
#[command(service = "faults")]
#[http(POST, "/faults/context")]
async fn context_chain(ctx: Ctx, _input: Nothing) -> Result<Chain, Error> {
    let inner = ctx.call::<inner_context>(Nothing {}).await?;
    Ok(Chain {
        outer: seen(&ctx),
        inner,
    })
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
struct Search {
    term: String,
    limit: Option<u32>,
    exact: bool,
}

/// Query parameters fill the input's fields, typed by the input's schema.
#[command(service = "faults")]
#[http(GET, "/faults/search")]
async fn search(_ctx: Ctx, input: Search) -> Result<Search, Error> {
    Ok(input)
}

async fn app() -> (cohort::Running, Client) {
    let running = start_embedded(|config| config.body_limit = 4096).await;
    let client = Client::new(base_url(&running));
    (running, client)
}

fn assert_problem(reply: &cohort_tests::Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(
        reply.content_type(),
        Some("application/problem+json"),
        "{}",
        reply.text
    );
    assert_eq!(reply.body["status"], status, "{}", reply.text);
    assert!(
        reply.body["title"].is_string() && reply.body["type"].is_string(),
        "{}",
        reply.text
    );
    assert!(
        reply.instance().is_some(),
        "every response names the instance"
    );
}

#[tokio::test]
async fn echo_answers_with_n_plus_one_and_the_instance() {
    let (running, client) = app().await;
    let reply = client
        .post("/echo", json!({"text": "hello", "n": 41}))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.body,
        json!({"text": "hello", "n": 42, "instance": running.instance_id()})
    );
    assert_eq!(reply.instance(), Some(running.instance_id()));
    assert_eq!(reply.executed_by(), Some(running.instance_id()));
    assert_eq!(reply.content_type(), Some("application/json"));
}

#[tokio::test]
async fn malformed_json_is_400() {
    let (_running, client) = app().await;
    let reply = client
        .send(Method::POST, "/echo", Some("{\"text\": ".into()))
        .await;
    assert_problem(&reply, 400);
}

#[tokio::test]
async fn wrong_types_and_missing_fields_are_422_naming_the_field() {
    let (_running, client) = app().await;
    let reply = client
        .post("/echo", json!({"text": "x", "n": "many"}))
        .await;
    assert_problem(&reply, 422);
    assert_eq!(reply.body["field"], "n");
    let reply = client.post("/echo", json!({"n": 1})).await;
    assert_problem(&reply, 422);
    assert_eq!(reply.body["field"], "text");
}

#[tokio::test]
async fn oversize_body_is_413() {
    let (_running, client) = app().await;
    let reply = client
        .post("/echo", json!({"text": "x".repeat(10_000), "n": 1}))
        .await;
    assert_problem(&reply, 413);
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_is_405() {
    let (_running, client) = app().await;
    assert_problem(&client.get("/nowhere").await, 404);
    assert_problem(&client.get("/echo").await, 405);
}

#[tokio::test]
async fn panics_and_unexpected_errors_are_500_with_a_trace_id_and_the_instance_serves_on() {
    let (_running, client) = app().await;
    for path in ["/faults/panic", "/faults/internal"] {
        let reply = client.post(path, json!({})).await;
        assert_problem(&reply, 500);
        assert!(
            reply.body["trace_id"]
                .as_str()
                .is_some_and(|t| t.len() == 32),
            "{}",
            reply.text
        );
        assert!(
            !reply.text.contains("secret") && !reply.text.contains("password"),
            "{}",
            reply.text
        );
    }
    let reply = client
        .post("/echo", json!({"text": "still here", "n": 1}))
        .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn a_request_without_a_trace_gets_one_shared_by_all_it_causes() {
    let (_running, client) = app().await;
    let reply = client.post("/faults/context", json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let outer = &reply.body["outer"];
    let trace_id = outer["trace_id"].as_str().unwrap_or_default();
    assert_eq!(
        trace_id.len(),
        32,
        "the command starts a trace: {}",
        reply.text
    );
    assert_eq!(reply.body["inner"]["trace_id"], trace_id, "{}", reply.text);
    // The called command allows itself 60 s, its caller 30 s: the caller's deadline binds it.
    let outer_deadline = outer["deadline_ms"].as_u64().expect("a deadline");
    assert_eq!(
        reply.body["inner"]["deadline_ms"], outer_deadline,
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn a_request_with_a_trace_continues_it() {
    let (_running, client) = app().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let reply = reqwest::Client::new()
        .post(format!("{}/faults/context", client.base()))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({}))
        .send()
        .await
        .expect("the request reaches the server");
    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.expect("JSON");
    assert_eq!(body["outer"]["trace_id"], trace_id, "{body}");
    assert_eq!(body["inner"]["trace_id"], trace_id, "{body}");
}

#[tokio::test]
async fn a_command_past_its_deadline_is_504() {
    let (_running, client) = app().await;
    let reply = client.post("/faults/slow", json!({})).await;
    assert_problem(&reply, 504);
}

#[tokio::test]
async fn query_parameters_fill_typed_fields() {
    let (_running, client) = app().await;
    let reply = client
        .get("/faults/search?term=red%20apple&limit=5&exact=true&ignored=1")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.body,
        json!({"term": "red apple", "limit": 5, "exact": true})
    );
    let reply = client.get("/faults/search?term=x&exact=maybe").await;
    assert_problem(&reply, 422);
    assert_eq!(reply.body["field"], "exact");
}

#[tokio::test]
async fn accounts_sign_up_log_in_me_log_out() {
    let store = Arc::new(MemoryStore::new());
    let running = cohort::App::with_config(cohort::Config {
        http_addr: Some(([127, 0, 0, 1], 0).into()),
        ..cohort::Config::default()
    })
    .store(store.clone())
    .start()
    .await
    .expect("starts");
    let _ = example_app::app;
    let client = Client::new(base_url(&running));
    let alice = json!({"username": "alice", "password": "correct horse"});

    let reply = client.post("/accounts", alice.clone()).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.body, json!({"username": "alice"}));
    assert_problem(&client.post("/accounts", alice.clone()).await, 409);
    let reply = client
        .post("/accounts", json!({"username": "al", "password": "x"}))
        .await;
    assert_problem(&reply, 422);
    assert_eq!(reply.body["field"], "username");
    let reply = client
        .post(
            "/accounts",
            json!({"username": "a".repeat(33), "password": "x"}),
        )
        .await;
    assert_eq!(reply.body["field"], "username");

    let stored = store
        .get("cohort:accounts:user:alice")
        .await
        .expect("get")
        .expect("stored");
    let stored = String::from_utf8_lossy(&stored.value);
    assert!(
        !stored.contains("correct horse") && stored.contains("$argon2"),
        "{stored}"
    );

    assert_problem(&client.get("/me").await, 401);
    let reply = client
        .post(
            "/sessions",
            json!({"username": "alice", "password": "wrong"}),
        )
        .await;
    assert_problem(&reply, 401);
    let reply = client
        .post("/sessions", json!({"username": "nobody", "password": "x"}))
        .await;
    assert_problem(&reply, 401);
    assert!(client.cookie().is_none());

    let reply = client.post("/sessions", alice.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let set_cookie = reply.header("set-cookie").expect("a session cookie");
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    let id = client
        .cookie()
        .expect("kept")
        .trim_start_matches("cohort_session=")
        .to_owned();
    assert!(id.len() >= 32, "at least 128 random bits: {id}");

    let reply = client.get("/me").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"username": "alice"}));

    let reply = client.delete("/sessions").await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert!(reply.text.is_empty());
    assert!(
        reply
            .header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
    assert!(client.cookie().is_none());
    assert_problem(&client.get("/me").await, 401);

    // The old cookie is dead too, not just forgotten by this client.
    let replay = Client::new(base_url(&running)).with_cookie(format!("cohort_session={id}"));
    assert_problem(&replay.get("/me").await, 401);
}

#[tokio::test]
async fn orders_take_stock_atomically_and_are_audited() {
    let (_running, client) = app().await;
    let reply = client.put("/stock/apple", json!({"qty": 5})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"sku": "apple", "qty": 5}));

    let reply = client
        .post("/orders", json!({"sku": "apple", "qty": 2}))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let id = reply.body["id"].as_u64().expect("an id");
    assert_eq!(reply.body["sku"], "apple");
    assert_eq!(reply.body["qty"], 2);

    let reply = client
        .post("/orders", json!({"sku": "apple", "qty": 4}))
        .await;
    assert_problem(&reply, 409);
    assert_eq!(client.get("/stock/apple").await.body["qty"], 3);
    assert_problem(
        &client
            .post("/orders", json!({"sku": "pear", "qty": 1}))
            .await,
        409,
    );
    let reply = client
        .post("/orders", json!({"sku": "apple", "qty": 0}))
        .await;
    assert_eq!(reply.body["field"], "qty");

    let reply = client.get(&format!("/orders/{id}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"id": id, "sku": "apple", "qty": 2}));
    assert_problem(&client.get("/orders/999999").await, 404);
    let reply = client.get("/orders/abc").await;
    assert_problem(&reply, 422);
    assert_eq!(reply.body["field"], "id");

    let audit = wait_for_audit(&client, 1).await;
    assert_eq!(
        audit["by_instance"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum::<u64>()),
        Some(1)
    );
}

#[tokio::test]
async fn a_command_this_instance_does_not_serve_is_503_at_once() {
    let running = start_embedded(|config| config.services = Some(vec!["accounts".into()])).await;
    let client = Client::new(base_url(&running));
    let reply = client.post("/echo", json!({"text": "x", "n": 1})).await;
    assert_problem(&reply, 503);
    assert_eq!(reply.body["code"], "no_responders");
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
async fn an_event_that_does_not_decode_is_dead_lettered_without_retries() {
    use cohort::broker::{Broker, MemoryBroker};
    use cohort::message::Message;

    let broker = MemoryBroker::new();
    let running = cohort::App::with_config(cohort::Config {
        http_addr: None,
        // Retries would take minutes: a dead letter within the test's patience shows there were none.
        event_backoff: vec![Duration::from_secs(600)],
        ..cohort::Config::default()
    })
    .broker(Arc::new(broker.clone()))
    .start()
    .await
    .expect("starts");
    let _ = example_app::app;
    broker
        .publish(
            "cohort.evt.orders.order_placed",
            Message::new(r#"{"id": "not a number"}"#),
        )
        .await
        .expect("published");
    let letters = eventually_ok(
        "the undecodable event must be dead-lettered by both audit subscriptions",
        Duration::from_secs(10),
        async || match broker.dead_letters() {
            letters if letters.len() == 2 => Ok(letters),
            letters => Err(format!("the dead letters so far: {letters:?}")),
        },
    )
    .await;
    let subjects: Vec<&str> = letters
        .iter()
        .map(|(subject, _)| subject.as_str())
        .collect();
    assert!(
        subjects.contains(&"cohort.dlq.audit.count_order"),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"cohort.dlq.audit.hear_order"),
        "{subjects:?}"
    );
    let error = letters[0].1.meta.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("id"),
        "the dead letter says what was wrong: {error}"
    );
    running.shutdown().await.expect("shuts down");
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

#[tokio::test]
async fn an_unknown_service_in_cohort_services_stops_start_up() {
    let _ = example_app::app;
    let config = cohort::Config {
        http_addr: None,
        services: Some(vec!["ordres".into()]),
        ..cohort::Config::default()
    };
    let err = cohort::App::with_config(config)
        .start()
        .await
        .err()
        .expect("refused");
    assert!(
        err.message().contains("ordres") && err.message().contains("orders"),
        "{err}"
    );
}

#[tokio::test]
async fn commands_can_be_called_from_outside_a_handler_with_their_types() {
    use example_app::echo::{EchoIn, echo};
    use example_app::orders::{OrderId, get_order};

    let running = start_embedded(|config| config.http_addr = None).await;
    let out = running
        .call::<echo>(EchoIn {
            text: "typed".into(),
            n: 1,
        })
        .await
        .expect("echo answers");
    assert_eq!((out.text.as_str(), out.n), ("typed", 2));
    assert_eq!(out.instance, running.instance_id());
    let err = running
        .call::<get_order>(OrderId { id: 999 })
        .await
        .expect_err("no such order");
    assert_eq!(err.kind(), cohort::ErrorKind::NotFound);
}
