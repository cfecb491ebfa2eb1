use cohort::prelude::*;

struct OutOfStock;

#[command(service = "orders")]
async fn place_order(_ctx: Ctx) -> Result<(), OutOfStock> {
    Err(OutOfStock)
}

fn main() {}
