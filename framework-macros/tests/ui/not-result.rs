use cohort::prelude::*;

#[command(service = "orders")]
async fn count_orders(_ctx: Ctx) -> u64 {
    0
}

fn main() {}
