use cohort::prelude::*;

#[derive(serde::Deserialize, Event)]
struct OrderPlaced {
    id: u64,
}

fn main() {}
