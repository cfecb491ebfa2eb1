use cohort::prelude::*;

#[command(service = "files")]
async fn read_config(_ctx: Ctx) -> std::io::Result<String> {
    std::fs::read_to_string("config.toml")
}

fn main() {}
