// mimalloc for the many small allocations of Cohort's hot path (envelopes, headers); the benchmark
// contenders use it too, so they compare code, not allocators.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), cohort::Error> {
    example_app::app()?.run().await
}
