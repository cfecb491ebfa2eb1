use cohort::prelude::*;

async fn admin(_ctx: &Ctx) -> bool {
    true
}

#[command(service = "orders", guard = admin)]
async fn set_stock(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
