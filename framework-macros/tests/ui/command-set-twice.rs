use cohort::prelude::*;

#[http(GET, "/orders")]
#[command(service = "orders")]
#[command(service = "orders", version = 2)]
async fn list_orders(_ctx: Ctx) -> Result<Vec<u64>, Error> {
    Ok(Vec::new())
}

fn main() {}
