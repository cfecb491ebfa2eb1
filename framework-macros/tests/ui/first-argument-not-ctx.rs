use cohort::prelude::*;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct PlaceOrder {
    sku: String,
}

#[command(service = "orders")]
async fn place_order(input: PlaceOrder) -> Result<String, Error> {
    Ok(input.sku)
}

fn main() {}
