use cohort::prelude::*;

#[derive(serde::Serialize, serde::Deserialize, Event)]
struct OrderPlaced {
    id: u64,
}

#[subscription(service = "audit")]
#[http(POST, "/audit")]
async fn record_order(_ctx: Ctx, event: OrderPlaced) -> Result<(), Error> {
    let _ = event.id;
    Ok(())
}

fn main() {}
