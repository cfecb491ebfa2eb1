use cohort::prelude::*;

#[derive(schemars::JsonSchema)]
struct Placed {
    id: u64,
}

#[command(service = "orders")]
async fn place_order(_ctx: Ctx) -> Result<Placed, Error> {
    Ok(Placed { id: 1 })
}

fn main() {}
