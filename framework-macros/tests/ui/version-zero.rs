use cohort::prelude::*;

#[command(service = "orders", version = 0)]
async fn place_order(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
