use cohort::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Event)]
struct PriceChanged {
    sku: String,
}

#[subscription(service = "catalog", every_instance, start = "last 100")]
async fn forget_price(_ctx: Ctx, _event: PriceChanged) -> Result<(), Error> {
    Ok(())
}

fn main() {}
