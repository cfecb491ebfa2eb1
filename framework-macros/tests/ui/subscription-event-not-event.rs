use cohort::prelude::*;

#[derive(serde::Serialize, serde::Deserialize)]
struct OrderPlaced {
    id: u64,
}

#[subscription(service = "audit")]
async fn record_order(_ctx: Ctx, event: OrderPlaced) -> Result<(), Error> {
    let _ = event.id;
    Ok(())
}

fn main() {}
