use cohort::prelude::*;

#[derive(serde::Serialize, serde::Deserialize, Event)]
struct OrderPlaced {
    id: u64,
}

struct AuditFailed;

#[subscription(service = "audit")]
async fn record_order(_ctx: Ctx, event: OrderPlaced) -> Result<(), AuditFailed> {
    let _ = event.id;
    Err(AuditFailed)
}

fn main() {}
