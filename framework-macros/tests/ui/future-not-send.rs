use cohort::prelude::*;
use std::rc::Rc;

async fn audit() {}

#[command(service = "orders")]
async fn place_order(_ctx: Ctx) -> Result<usize, Error> {
    let shared = Rc::new(1);
    audit().await;
    Ok(*shared)
}

fn main() {}
