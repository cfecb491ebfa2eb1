use cohort::prelude::*;

#[derive(serde::Serialize, schemars::JsonSchema)]
struct Reserved {
    left: u32,
}

#[command(service = "stock")]
async fn reserve_stock(_ctx: Ctx, sku: String) -> Result<Reserved, Error> {
    Ok(Reserved { left: sku.len() as u32 })
}

// rustc checks the bounds of an `async fn` where it is named, again for the future it returns and
// again at `.await`: the same message, three times.
#[command(service = "orders")]
async fn place_order(ctx: Ctx, sku: String) -> Result<u32, Error> {
    let reserved = ctx.call::<reserve_stock>(sku).await?;
    Ok(reserved.left)
}

fn main() {}
