//! Trace context and deadlines: a request starts a trace or continues the caller's, and everything
//! it causes shares it and the caller's deadline, but for the events it emits, which are handled
//! whenever they are delivered.

use std::sync::Mutex;
use std::time::Duration;

use cohort::prelude::*;
use cohort::testing::eventually_ok;
use cohort_tests::{Client, Nothing, base_url, start_embedded};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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

/// The timeout of `emit_late_work`: its event is handled after it.
const EMITTER_TIMEOUT: Duration = Duration::from_millis(500);

/// Emitted by `emit_late_work`, handled after that command's deadline has passed.
#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct LateWork {}

/// Emits `LateWork` (its timeout is `EMITTER_TIMEOUT`).
#[command(service = "faults", timeout = "500ms")]
async fn emit_late_work(ctx: Ctx, _input: Nothing) -> Result<(), Error> {
    ctx.emit(&LateWork {}).await
}

/// What the handler of `LateWork` saw: whether it had a deadline, and what its call returned.
static LATE_WORK: Mutex<Option<(bool, Result<Seen, String>)>> = Mutex::new(None);

/// Handles `LateWork` once its emitter's deadline has passed, and calls a command then.
#[subscription(service = "faults")]
async fn do_late_work(ctx: Ctx, _event: LateWork) -> Result<(), Error> {
    tokio::time::sleep(EMITTER_TIMEOUT + Duration::from_millis(300)).await;
    let called = ctx.call::<inner_context>(Nothing {}).await;
    let seen = (ctx.deadline().is_some(), called.map_err(|e| e.to_string()));
    *LATE_WORK.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
    Ok(())
}

async fn app() -> (cohort::Running, Client) {
    let running = start_embedded(|_| {}).await;
    let client = Client::new(base_url(&running));
    (running, client)
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
async fn an_event_is_handled_on_its_own_time_not_its_emitters_deadline() {
    let (running, _client) = app().await;
    running
        .call::<emit_late_work>(Nothing {})
        .await
        .expect("the event is emitted");
    let (bounded, called) = eventually_ok(
        "the event is handled",
        Duration::from_secs(10),
        async || {
            let seen = LATE_WORK.lock().unwrap_or_else(|p| p.into_inner()).take();
            seen.ok_or("not yet")
        },
    )
    .await;
    assert!(
        !bounded,
        "an event's handler is not bound by its emitter's caller's deadline"
    );
    let inner = called.expect("the handler's call runs after the emitter's deadline");
    assert_eq!(
        inner.deadline_ms.map(|_| ()),
        Some(()),
        "the call has its own deadline"
    );
}
