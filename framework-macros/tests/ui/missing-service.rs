use cohort::prelude::*;

#[command(version = 2)]
async fn place_order(_ctx: Ctx) -> Result<(), Error> {
    Ok(())
}

fn main() {
    // Still a command type despite the error above, so this reports nothing more.
    let _ = <place_order as cohort::Command>::NAME;
}
