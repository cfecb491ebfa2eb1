//! `pricing.v1.quote`'s input and output and what it does, shared by both builds of the
//! rolling-deploy test: the old one (this binary, `quote-v1`) and the new one
//! (`tests/versions.rs`), which each declare the command and its route their own way.

use cohort::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What version 1 takes: a price in cents.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct QuoteV1 {
    pub cents: u64,
}

/// What version 1 answers: the price with tax, and the instance that computed it.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PriceV1 {
    pub total_cents: u64,
    pub instance: String,
}

/// Version 1: a fixed tax of 20 %.
pub fn price_v1(ctx: &Ctx, input: &QuoteV1) -> PriceV1 {
    PriceV1 {
        total_cents: input.cents * 6 / 5,
        instance: ctx.instance_id().to_owned(),
    }
}
