use cohort::prelude::*;

#[task(service = "reports", every = "30 parsecs")]
async fn report(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
