use cohort::prelude::*;

#[derive(schemars::JsonSchema)]
struct PlaceOrder {
    sku: String,
}

#[command(service = "orders")]
async fn place_order(_ctx: Ctx, input: PlaceOrder) -> Result<String, Error> {
    Ok(input.sku)
}

fn main() {}
