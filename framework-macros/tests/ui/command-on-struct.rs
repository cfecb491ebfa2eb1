use cohort::prelude::*;

#[command(service = "orders")]
struct PlaceOrder;

fn main() {}
