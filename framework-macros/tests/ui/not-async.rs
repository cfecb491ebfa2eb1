use cohort::prelude::*;

#[command(service = "orders")]
fn place_order(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
