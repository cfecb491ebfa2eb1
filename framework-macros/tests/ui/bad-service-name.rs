use cohort::prelude::*;

#[command(service = "Order Service")]
async fn place_order(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
