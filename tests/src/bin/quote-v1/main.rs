//! The old build of the rolling-deploy test (`tests/versions.rs`): it has `pricing.v1.quote`
//! only, routed at `POST /quote`.

mod quote;

use cohort::prelude::*;
use quote::{PriceV1, QuoteV1, price_v1};

/// Prices an amount (version 1).
#[command(service = "pricing", version = 1, name = "quote")]
#[http(POST, "/quote")]
async fn quote_v1(ctx: Ctx, input: QuoteV1) -> Result<PriceV1, Error> {
    Ok(price_v1(&ctx, &input))
}

#[tokio::main]
async fn main() -> Result<(), cohort::Error> {
    cohort::App::from_env()?.run().await
}
