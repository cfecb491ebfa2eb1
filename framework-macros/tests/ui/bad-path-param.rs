use cohort::prelude::*;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct ById {
    order_id: u64,
}

#[command(service = "orders")]
#[http(GET, "/orders/{order-id}")]
async fn get_order(_ctx: Ctx, input: ById) -> Result<u64, Error> {
    Ok(input.order_id)
}

fn main() {}
