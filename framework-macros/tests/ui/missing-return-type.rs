use cohort::prelude::*;

#[command(service = "orders")]
async fn place_order(_ctx: Ctx) {}

fn main() {}
