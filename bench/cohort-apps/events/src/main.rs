//! The Cohort contender of the events benchmark. One binary, two services, each instance running
//! one of them (`COHORT_SERVICES`): `emitter` emits `tick` events at the rate `POST /emit` asks
//! for, `sink` applies each tick once (a unit of work: an effect counter and the event's marker,
//! committed together) and reports the end-to-end latencies at `GET /stats`.

use cohort::prelude::*;
use cohort_bench::events::{ConsumedStats, EmitReport, EmitRun, Latencies, emit_for};
use serde::{Deserialize, Serialize};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The effect of a tick: one more on this counter of the sink's state.
const APPLIED: &str = "applied";

/// The end-to-end latencies of the ticks this instance applied. In memory on purpose: they are
/// this process's measurement, not the app's state.
static LATENCIES: Latencies = Latencies::new();

/// The event: the hand-written contenders' `Tick`, as a Cohort event.
#[derive(Debug, Clone, Deserialize, Serialize, Event)]
#[event(name = "tick")]
pub struct Ticked {
    pub seq: u64,
    pub sent_us: u64,
}

/// Emits ticks for the given seconds at the given rate (0: as fast as they are stored), with at
/// most `concurrency` emits waiting for JetStream at once.
#[command(service = "emitter", version = 1)]
#[http(POST, "/emit")]
pub async fn emit(ctx: Ctx, run: EmitRun) -> Result<EmitReport, Error> {
    if let Some(why) = run.invalid() {
        return Err(Error::bad_request(why));
    }
    let ctx = &ctx;
    emit_for(run, |tick| async move {
        ctx.emit(&Ticked {
            seq: tick.seq,
            sent_us: tick.sent_us,
        })
        .await
    })
    .await
}

/// Applies a tick once, however often it is delivered.
#[subscription(service = "sink")]
pub async fn apply_tick(ctx: Ctx, event: Ticked) -> Result<(), Error> {
    ctx.transaction(async move |tx| {
        tx.add(APPLIED, 1);
        Ok(())
    })
    .await?;
    LATENCIES.record(event.sent_us);
    Ok(())
}

/// What this sink instance applied since the last reset, and the effect counter.
#[command(service = "sink", version = 1)]
#[http(GET, "/stats")]
pub async fn stats(ctx: Ctx) -> Result<ConsumedStats, Error> {
    let applied = ctx.state().get::<u64>(APPLIED).await?.unwrap_or(0);
    Ok(LATENCIES.stats(applied))
}

/// Forgets the latencies recorded so far (the effect counter stays).
#[command(service = "sink", version = 1)]
#[http(DELETE, "/stats")]
pub async fn reset_stats(_ctx: Ctx) -> Result<(), Error> {
    LATENCIES.reset();
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), cohort::Error> {
    cohort::App::from_env()?.run().await
}
