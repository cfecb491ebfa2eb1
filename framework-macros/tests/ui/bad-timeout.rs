use cohort::prelude::*;

#[command(service = "orders", timeout = "5 seconds")]
async fn place_order(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
