use cohort::prelude::*;

#[command(service = "orders")]
async fn place_order(_ctx: Ctx, sku: String, quantity: u32) -> Result<(), Error> {
    let _ = (sku, quantity);
    Ok(())
}

fn main() {}
