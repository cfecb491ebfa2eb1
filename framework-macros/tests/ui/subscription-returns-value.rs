use cohort::prelude::*;

#[derive(serde::Serialize, serde::Deserialize, Event)]
struct OrderPlaced {
    id: u64,
}

#[subscription(service = "audit")]
async fn record_order(_ctx: Ctx, event: OrderPlaced) -> Result<u64, Error> {
    Ok(event.id)
}

fn main() {}
