use cohort::prelude::*;

#[command(service = "orders")]
async fn place_order<T: serde::de::DeserializeOwned>(_ctx: Ctx, _input: T) -> Result<(), Error> {
    Ok(())
}

fn main() {}
