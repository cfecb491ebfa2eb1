use cohort::prelude::*;

#[task(service = "reports", every = "1m")]
async fn report(_ctx: Ctx, day: u32) -> Result<u32, Error> {
    Ok(day)
}

fn main() {}
