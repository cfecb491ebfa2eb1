//! Which status and problem document each bad input and each failure gets, through the example
//! app's router in-process.

use std::time::Duration;

use cohort::prelude::*;
use cohort_tests::{InProcess, Nothing, assert_problem};
use reqwest::Method;
use serde_json::json;

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

async fn app() -> InProcess {
    InProcess::start(|config| config.body_limit = 4096).await
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = app().await;
    let reply = app
        .send(Method::POST, "/echo", Some("{\"text\": ".into()))
        .await;
    assert_problem(&reply, 400);
}

#[tokio::test]
async fn wrong_types_and_missing_fields_are_422_naming_the_field() {
    let app = app().await;
    let reply = app.post("/echo", json!({"text": "x", "n": "many"})).await;
    assert_problem(&reply, 422);
    assert_eq!(reply.body["field"], "n");
    let reply = app.post("/echo", json!({"n": 1})).await;
    assert_problem(&reply, 422);
    assert_eq!(reply.body["field"], "text");
}

#[tokio::test]
async fn oversize_body_is_413() {
    let app = app().await;
    let reply = app
        .post("/echo", json!({"text": "x".repeat(10_000), "n": 1}))
        .await;
    assert_problem(&reply, 413);
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_is_405() {
    let app = app().await;
    assert_problem(&app.get("/nowhere").await, 404);
    assert_problem(&app.get("/echo").await, 405);
}

#[tokio::test]
async fn panics_and_unexpected_errors_are_500_with_a_trace_id_and_the_instance_serves_on() {
    let app = app().await;
    for path in ["/faults/panic", "/faults/internal"] {
        let reply = app.post(path, json!({})).await;
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
    let reply = app
        .post("/echo", json!({"text": "still here", "n": 1}))
        .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn a_command_past_its_deadline_is_504() {
    let app = app().await;
    let reply = app.post("/faults/slow", json!({})).await;
    assert_problem(&reply, 504);
}

#[tokio::test]
async fn a_command_this_instance_does_not_serve_is_503_at_once() {
    let app = InProcess::start(|config| config.services = Some(vec!["accounts".into()])).await;
    let reply = app.post("/echo", json!({"text": "x", "n": 1})).await;
    assert_problem(&reply, 503);
    assert_eq!(reply.body["code"], "no_responders");
}
