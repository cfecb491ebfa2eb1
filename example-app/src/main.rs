// Cohort's hot path makes many small allocations (envelopes, headers); mimalloc serves them
// faster than the system allocator, and the benchmark contenders use it too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), cohort::Error> {
    example_app::app()?.run().await
}
