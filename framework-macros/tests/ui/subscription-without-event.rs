use cohort::prelude::*;

#[subscription(service = "audit")]
async fn record_order(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
