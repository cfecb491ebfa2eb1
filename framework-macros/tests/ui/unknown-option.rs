use cohort::prelude::*;

#[command(service = "orders", retries = 3)]
async fn place_order(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
