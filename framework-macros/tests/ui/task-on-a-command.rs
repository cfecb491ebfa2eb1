use cohort::prelude::*;

#[command(service = "reports")]
#[task(service = "reports", every = "1m")]
async fn report(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
