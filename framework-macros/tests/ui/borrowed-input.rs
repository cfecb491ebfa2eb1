use cohort::prelude::*;

#[command(service = "greeter")]
async fn greet(_ctx: Ctx, name: &str) -> Result<String, Error> {
    Ok(format!("hello, {name}"))
}

fn main() {}
