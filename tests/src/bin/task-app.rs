//! An app of tasks only, for the tests of tasks across real processes (`tests/tasks.rs`).
//! `COHORT_SERVICES` picks the task under test: `ticks` (every second, brief), `overrun` (every
//! second, runs 2.5 s) or `migrations` (`on_start`, runs 1.5 s).
//!
//! Each run is recorded in the store, in its service's `runs` key: the instance, when it started
//! and when it ended (none when it never did), for the tests to count runs and find overlaps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cohort::prelude::*;
use serde::{Deserialize, Serialize};

/// One run of a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Run {
    instance: String,
    start: u64,
    end: Option<u64>,
}

#[task(service = "ticks", every = "1s")]
async fn tick(ctx: Ctx) -> Result<(), Error> {
    record_run(&ctx, Duration::from_millis(300)).await
}

#[task(service = "overrun", every = "1s")]
async fn overrun(ctx: Ctx) -> Result<(), Error> {
    record_run(&ctx, Duration::from_millis(2_500)).await
}

#[task(service = "migrations", on_start)]
async fn migrate(ctx: Ctx) -> Result<(), Error> {
    record_run(&ctx, Duration::from_millis(1_500)).await
}

/// Records the start, waits `hold`, records the end.
async fn record_run(ctx: &Ctx, hold: Duration) -> Result<(), Error> {
    let state = ctx.state();
    let instance = ctx.instance_id().to_owned();
    let start = now_millis();
    state
        .update("runs", |runs: Option<Vec<Run>>| {
            let mut runs = runs.unwrap_or_default();
            runs.push(Run {
                instance: instance.clone(),
                start,
                end: None,
            });
            Ok(runs)
        })
        .await?;
    tokio::time::sleep(hold).await;
    let end = now_millis();
    state
        .update("runs", |runs: Option<Vec<Run>>| {
            let mut runs = runs.unwrap_or_default();
            for run in runs
                .iter_mut()
                .filter(|r| r.instance == instance && r.start == start)
            {
                run.end = Some(end);
            }
            Ok(runs)
        })
        .await?;
    Ok(())
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[tokio::main]
async fn main() -> Result<(), cohort::Error> {
    cohort::App::from_env()?.run().await
}
