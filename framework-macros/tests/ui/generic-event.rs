use cohort::prelude::*;

#[derive(serde::Serialize, serde::Deserialize, Event)]
struct Changed<T> {
    value: T,
}

fn main() {}
