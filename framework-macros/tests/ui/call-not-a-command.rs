use cohort::prelude::*;

struct ReserveStock;

// rustc checks the bounds of an `async fn` where it is named, again for the future it returns and
// again at `.await`: the same message, three times.
#[command(service = "orders")]
async fn place_order(ctx: Ctx, sku: String) -> Result<u32, Error> {
    ctx.call::<ReserveStock>(sku).await
}

fn main() {}
