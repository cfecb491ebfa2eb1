//! `POST /echo`: answers with the text, `n + 1`, and the instance that ran it. `POST /echo/slow`
//! does the same after a wait, to watch a command in flight (and what a client sees when the
//! instance running it dies).

use std::time::Duration;

use cohort::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct EchoIn {
    pub text: String,
    pub n: i64,
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct EchoOut {
    pub text: String,
    /// `n + 1`: 128 bits wide, so that every `n` has one.
    pub n: i128,
    /// The instance that executed the command.
    pub instance: String,
}

/// Echoes the text back with `n + 1`.
#[command(service = "echo", version = 1)]
#[http(POST, "/echo")]
pub async fn echo(ctx: Ctx, input: EchoIn) -> Result<EchoOut, Error> {
    Ok(EchoOut {
        text: input.text,
        n: i128::from(input.n) + 1,
        instance: ctx.instance_id().to_owned(),
    })
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct SlowEchoIn {
    pub text: String,
    pub n: i64,
    /// How long to wait before answering, in milliseconds: at most a minute.
    #[schemars(range(max = 60_000))]
    pub wait_ms: u64,
}

/// Echoes like `echo`, after waiting `wait_ms`. Running it twice does no harm: a caller sends it
/// again when the instance running it is lost.
#[command(service = "echo", version = 1, idempotent)]
#[http(POST, "/echo/slow")]
pub async fn slow_echo(ctx: Ctx, input: SlowEchoIn) -> Result<EchoOut, Error> {
    tokio::time::sleep(Duration::from_millis(input.wait_ms)).await;
    let SlowEchoIn { text, n, .. } = input;
    echo(ctx, EchoIn { text, n }).await
}
