//! The example app's commands answering: over real HTTP, with inputs from query strings, and called
//! from outside a handler with their types.

use cohort::prelude::*;
use cohort_tests::{Client, InProcess, assert_problem, base_url, start_embedded};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

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

#[tokio::test]
async fn echo_answers_with_n_plus_one_and_the_instance() {
    let running = start_embedded(|_| {}).await;
    let client = Client::new(base_url(&running));
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
async fn query_parameters_fill_typed_fields() {
    let app = InProcess::start(|_| {}).await;
    let reply = app
        .get("/faults/search?term=red%20apple&limit=5&exact=true&ignored=1")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.body,
        json!({"term": "red apple", "limit": 5, "exact": true})
    );
    let reply = app.get("/faults/search?term=x&exact=maybe").await;
    assert_problem(&reply, 422);
    assert_eq!(reply.body["field"], "exact");
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
    // A call from outside has no session: the guard of `get_order` refuses it as any other.
    let err = running
        .call::<get_order>(OrderId { id: 999 })
        .await
        .expect_err("not signed in");
    assert_eq!(err.kind(), cohort::ErrorKind::Unauthorized);
}
