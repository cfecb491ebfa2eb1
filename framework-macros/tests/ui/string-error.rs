use cohort::prelude::*;

#[command(service = "orders")]
async fn place_order(_ctx: Ctx) -> Result<(), String> {
    Err("out of stock".to_owned())
}

fn main() {}
