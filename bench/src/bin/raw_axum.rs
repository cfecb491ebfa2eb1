//! Contender "raw axum": `POST /echo` answered in-process, no messaging.
//!
//! Env: `BENCH_ADDR` (default 127.0.0.1:8090), `BENCH_INSTANCE` (default `raw`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::{Router, serve};
use cohort_bench::{EchoIn, echo_reply, env_or, json_error, json_response};

async fn echo(State(instance): State<Arc<str>>, body: Bytes) -> Response {
    let Ok(input) = serde_json::from_slice::<EchoIn>(&body) else {
        return json_error(StatusCode::BAD_REQUEST, "malformed echo request");
    };
    match echo_reply(&input, &instance) {
        Some(out) => json_response(StatusCode::OK, out),
        None => json_error(StatusCode::BAD_REQUEST, "n out of range"),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = env_or("BENCH_ADDR", "127.0.0.1:8090");
    let instance: Arc<str> = env_or("BENCH_INSTANCE", "raw").into();
    let app = Router::new()
        .route("/echo", post(echo))
        .with_state(instance);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("raw_axum listening on {addr}");
    serve(listener, app).await
}

// The same allocator as the Cohort contenders, so that the comparison measures the code only.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
