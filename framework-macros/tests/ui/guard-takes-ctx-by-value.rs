use cohort::prelude::*;

async fn admin(ctx: Ctx) -> Result<(), Error> {
    cohort::guard::has_role(&ctx, "admin").await
}

#[command(service = "orders", guard = admin)]
async fn set_stock(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
