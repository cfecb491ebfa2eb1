use cohort::prelude::*;

#[task(service = "reports", every = "1m", cron = "0 3 * * *")]
async fn report(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

#[task(service = "reports")]
async fn never(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
