use cohort::prelude::*;

#[http(post, "/orders")]
#[command(service = "orders")]
async fn place_order(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
