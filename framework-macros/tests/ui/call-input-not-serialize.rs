use cohort::prelude::*;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Reserve {
    sku: String,
}

#[command(service = "stock")]
async fn reserve_stock(_ctx: Ctx, input: Reserve) -> Result<u32, Error> {
    Ok(input.sku.len() as u32)
}

// rustc checks the bounds of an `async fn` where it is named, again for the future it returns and
// again at `.await`: the same message, three times.
#[command(service = "orders")]
async fn place_order(ctx: Ctx, sku: String) -> Result<u32, Error> {
    ctx.call::<reserve_stock>(Reserve { sku }).await
}

fn main() {}
