use cohort::prelude::*;

// Without `#[command]` there is no type named `reserve_stock`, only the function: rustc reports
// E0747 while it resolves the name, before any trait is checked, so no `#[diagnostic]` attribute
// of Cohort's can word it. Its help says that the name is a function, not a type.
async fn reserve_stock(_ctx: Ctx, sku: String) -> Result<u32, Error> {
    Ok(sku.len() as u32)
}

#[command(service = "orders")]
async fn place_order(ctx: Ctx, sku: String) -> Result<u32, Error> {
    ctx.call::<reserve_stock>(sku).await
}

fn main() {}
