use cohort::prelude::*;

struct Orders;

impl Orders {
    #[command(service = "orders")]
    async fn place_order(&self, _ctx: Ctx) -> Result<(), Error> {
        Ok(())
    }
}

fn main() {}
