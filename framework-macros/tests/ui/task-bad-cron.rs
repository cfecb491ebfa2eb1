use cohort::prelude::*;

#[task(service = "reports", cron = "0 25 * * *")]
async fn nightly(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

#[task(service = "reports", cron = "0 3 * *")]
async fn four_fields(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
