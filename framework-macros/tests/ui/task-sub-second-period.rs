use cohort::prelude::*;

#[task(service = "reports", every = "500ms")]
async fn report(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {}
