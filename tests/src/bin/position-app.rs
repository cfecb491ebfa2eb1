//! An app of every-instance subscriptions, one at each start position, for the test of an
//! instance killed and started again (`tests/positions.rs`). `COHORT_SERVICES` picks the role:
//! `catalog` changes prices (`POST /prices`), `cache` hears the changes.
//!
//! Each subscription keeps the changes it heard in this process's memory, as a cache would: a
//! process that starts again has heard nothing until its subscriptions replay their positions.
//! `GET /heard` reads them from the `cache` instance.

use std::collections::BTreeMap;
use std::sync::Mutex;

use cohort::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, Event)]
struct PriceChanged {
    n: u64,
}

/// The numbers of the changes each subscription heard since this process started.
static HEARD: Mutex<BTreeMap<&str, Vec<u64>>> = Mutex::new(BTreeMap::new());

fn hear(subscription: &'static str, event: &PriceChanged) -> Result<(), Error> {
    let mut heard = HEARD.lock().map_err(|_| Error::internal("poisoned"))?;
    heard.entry(subscription).or_default().push(event.n);
    Ok(())
}

#[command(service = "catalog", version = 1)]
#[http(POST, "/prices", status = 204)]
async fn change_price(ctx: Ctx, input: PriceChanged) -> Result<(), Error> {
    ctx.emit(&input).await
}

#[subscription(service = "cache", every_instance)]
async fn resumed(_ctx: Ctx, event: PriceChanged) -> Result<(), Error> {
    hear("resumed", &event)
}

#[subscription(service = "cache", every_instance, start = "new")]
async fn fresh(_ctx: Ctx, event: PriceChanged) -> Result<(), Error> {
    hear("new", &event)
}

#[subscription(service = "cache", every_instance, start = "last:3")]
async fn last_three(_ctx: Ctx, event: PriceChanged) -> Result<(), Error> {
    hear("last:3", &event)
}

#[subscription(service = "cache", every_instance, start = "since:1h")]
async fn last_hour(_ctx: Ctx, event: PriceChanged) -> Result<(), Error> {
    hear("since:1h", &event)
}

/// What each subscription heard, in order of the changes.
#[command(service = "cache", version = 1)]
#[http(GET, "/heard")]
async fn heard(_ctx: Ctx) -> Result<BTreeMap<String, Vec<u64>>, Error> {
    let heard = HEARD.lock().map_err(|_| Error::internal("poisoned"))?;
    Ok(heard
        .iter()
        .map(|(name, numbers)| {
            let mut numbers = numbers.clone();
            numbers.sort_unstable();
            ((*name).to_owned(), numbers)
        })
        .collect())
}

#[tokio::main]
async fn main() -> Result<(), cohort::Error> {
    cohort::App::from_env()?.run().await
}
