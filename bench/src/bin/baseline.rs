//! Contender "axum + async-nats baseline": what a team would write by hand.
//!
//! Every process runs a queue-group responder on `bench.echo`; with an HTTP
//! address it also serves `POST /echo` by sending a NATS request, so the work
//! lands on any instance in the group (this one or another process).
//!
//! Env: `BENCH_NATS_URL` (default nats://127.0.0.1:4222), `BENCH_ADDR`
//! (default 127.0.0.1:8090; `off` = responder only), `BENCH_INSTANCE`
//! (default `baseline`), `BENCH_RESPONDER_SPAWN=1` to handle each message in
//! its own task instead of inline (the default: the echo never waits, so a
//! task per message would only add scheduling),
//! `BENCH_SUBJECT` (default `bench.echo`; its queue group is the subject and
//! `.q`) so that several baselines can share one NATS server,
//! `BENCH_HEADERS=1` to send the headers of Cohort's signed cluster on the wire:
//! a request its `traceparent` and `Cohort-Signature`, a reply `Cohort-Instance`
//! and `Cohort-Signature` (a success has no `Cohort-Status`, a request with the
//! default deadline no `Cohort-Deadline`). The values are made without hashing:
//! the cost of Cohort's wire protocol, without the rest of Cohort.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::{Client, HeaderMap, Message, RequestErrorKind};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::{Router, serve};
use cohort_bench::{EchoIn, echo_reply, env_or, json_error, json_response};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A `Cohort-Signature` value of the right shape (`v1=` and 22 characters), not a real one.
const SIGNATURE: &str = "v1=0syhDVIi5jPNYfeP03jdyA";

/// Answers one request message. Malformed payloads get an empty reply so the
/// requester fails fast instead of waiting for its timeout.
async fn respond(client: &Client, instance: &str, headers: bool, msg: Message) {
    let Some(reply) = msg.reply else { return };
    let out = serde_json::from_slice::<EchoIn>(&msg.payload)
        .ok()
        .and_then(|input| echo_reply(&input, instance))
        .unwrap_or_default();
    let sent = if headers {
        let mut headers = HeaderMap::new();
        headers.insert("Cohort-Instance", instance);
        headers.insert("Cohort-Signature", SIGNATURE);
        client
            .publish_with_headers(reply, headers, out.into())
            .await
    } else {
        client.publish(reply, out.into()).await
    };
    if let Err(e) = sent {
        eprintln!("baseline {instance}: reply failed: {e}");
    }
}

async fn run_responder(
    client: Client,
    subject: String,
    instance: String,
    spawn: bool,
    headers: bool,
) -> Result<(), BoxError> {
    use futures_util::StreamExt as _;
    let queue = format!("{subject}.q");
    let mut sub = client
        .queue_subscribe(subject.clone(), queue.clone())
        .await?;
    // Make sure the server has registered the subscription before we report ready.
    client.flush().await?;
    eprintln!("baseline {instance}: responder ready on {subject} (queue {queue})");
    let instance: std::sync::Arc<str> = instance.into();
    while let Some(msg) = sub.next().await {
        if spawn {
            let (client, instance) = (client.clone(), instance.clone());
            tokio::spawn(async move { respond(&client, &instance, headers, msg).await });
        } else {
            respond(&client, &instance, headers, msg).await;
        }
    }
    Err("subscription closed".into())
}

/// What the HTTP handler needs: the connection and where the responders listen.
#[derive(Clone)]
struct Requester {
    client: Client,
    subject: async_nats::Subject,
    headers: bool,
}

/// The headers of a request of Cohort's signed cluster: a new `traceparent` each (a counter for
/// its ids) and a signature.
fn request_headers() -> HeaderMap {
    static SENT: AtomicU64 = AtomicU64::new(1);
    let n = SENT.fetch_add(1, Ordering::Relaxed);
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", format!("00-{n:032x}-{n:016x}-01").as_str());
    headers.insert("Cohort-Signature", SIGNATURE);
    headers
}

async fn echo(
    State(Requester {
        client,
        subject,
        headers,
    }): State<Requester>,
    body: Bytes,
) -> Response {
    // Validate and re-encode as a real app would before putting it on the wire.
    let Ok(input) = serde_json::from_slice::<EchoIn>(&body) else {
        return json_error(StatusCode::BAD_REQUEST, "malformed echo request");
    };
    if input.n == i64::MAX {
        return json_error(StatusCode::BAD_REQUEST, "n out of range");
    }
    let Ok(payload) = serde_json::to_vec(&input) else {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, "encode failed");
    };
    let answer = match headers {
        true => {
            client
                .request_with_headers(subject, request_headers(), payload.into())
                .await
        }
        false => client.request(subject, payload.into()).await,
    };
    match answer {
        Ok(msg) if msg.payload.is_empty() => {
            json_error(StatusCode::BAD_GATEWAY, "responder rejected request")
        }
        Ok(msg) => json_response(StatusCode::OK, msg.payload),
        Err(e) => match e.kind() {
            RequestErrorKind::NoResponders => {
                json_error(StatusCode::SERVICE_UNAVAILABLE, "no responders")
            }
            RequestErrorKind::TimedOut => json_error(StatusCode::GATEWAY_TIMEOUT, "timed out"),
            _ => json_error(StatusCode::BAD_GATEWAY, "nats request failed"),
        },
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let nats_url = env_or("BENCH_NATS_URL", "nats://127.0.0.1:4222");
    let addr = env_or("BENCH_ADDR", "127.0.0.1:8090");
    let instance = env_or("BENCH_INSTANCE", "baseline");
    let subject = env_or("BENCH_SUBJECT", "bench.echo");
    let spawn = std::env::var("BENCH_RESPONDER_SPAWN").is_ok_and(|v| v == "1");
    let headers = std::env::var("BENCH_HEADERS").is_ok_and(|v| v == "1");

    let client = async_nats::ConnectOptions::new()
        .name(format!("bench-baseline-{instance}"))
        .request_timeout(Some(Duration::from_secs(5)))
        .connect(&nats_url)
        .await?;

    let responder = tokio::spawn(run_responder(
        client.clone(),
        subject.clone(),
        instance.clone(),
        spawn,
        headers,
    ));

    if addr == "off" {
        return responder.await?;
    }

    let requester = Requester {
        client,
        subject: subject.into(),
        headers,
    };
    let app = Router::new()
        .route("/echo", post(echo))
        .with_state(requester);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("baseline {instance}: listening on {addr}");
    tokio::select! {
        r = serve(listener, app) => r?,
        r = responder => r??,
    }
    Ok(())
}

// The same allocator as the Cohort contenders, so that the comparison measures the code only.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
