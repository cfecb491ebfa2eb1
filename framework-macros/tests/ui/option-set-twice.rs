use cohort::prelude::*;

#[command(service = "orders", version = 1, service = "billing")]
async fn place_order(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
