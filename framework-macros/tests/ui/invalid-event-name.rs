use cohort::prelude::*;

#[derive(serde::Serialize, serde::Deserialize, Event)]
#[event(name = "Order.Placed")]
struct OrderPlaced {
    id: u64,
}

// Still an event despite the error above, so this reports nothing more.
#[subscription(service = "audit")]
async fn record_order(_ctx: Ctx, event: OrderPlaced) -> Result<(), Error> {
    let _ = event.id;
    Ok(())
}

fn main() {}
