use cohort::prelude::*;

#[command(service = "orders")]
#[http(POST, "/orders", status = 302)]
async fn place_order(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
