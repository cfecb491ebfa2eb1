#[tokio::main]
async fn main() -> Result<(), cohort::Error> {
    example_app::app()?.run().await
}
