//! A binary whose handlers live in a library it depends on (`example-app`) but never uses: the
//! linker drops the library's registrations, as it would in a user's app whose `main` forgets to
//! call into its library. Cohort must refuse to start it.

#[tokio::main]
async fn main() -> Result<(), cohort::Error> {
    cohort::App::from_env()?.run().await
}
