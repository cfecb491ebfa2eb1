use cohort::prelude::*;

#[http(GET, "/orders")]
async fn list_orders(_ctx: Ctx) -> Result<Vec<u64>, Error> {
    Ok(Vec::new())
}

fn main() {}
