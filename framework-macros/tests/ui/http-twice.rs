use cohort::prelude::*;

#[command(service = "orders")]
#[http(GET, "/orders")]
#[http(GET, "/orders/all")]
async fn list_orders(_ctx: Ctx) -> Result<Vec<u64>, Error> {
    Ok(Vec::new())
}

fn main() {}
