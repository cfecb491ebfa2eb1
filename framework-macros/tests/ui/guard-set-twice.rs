use cohort::prelude::*;

#[command(service = "orders", guard = cohort::guard::signed_in, guard = cohort::guard::signed_in)]
async fn place_order(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
