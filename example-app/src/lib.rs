//! A small shop built with Cohort: every feature of the framework, used the way it is meant to be.
//!
//! - `echo`: the smallest command, and the one the benchmarks drive.
//! - `accounts`: sign-up, log-in with a session cookie, `GET /me`, log-out.
//! - `orders`: stock per SKU, orders that take stock atomically and emit `OrderPlaced`.
//! - `audit`: subscriptions that count the orders, and which instance saw each; a task that keeps
//!   a snapshot of the count once a minute, on one instance of the deployment.
//! - `settings`: the shop's own settings (`[shop]`, `SHOP_*`), such as the largest order.
//!
//! Nothing here keeps state in memory: everything goes through `ctx.state()` and `ctx.session()`,
//! so any instance can run any command.

pub mod accounts;
pub mod audit;
pub mod echo;
pub mod orders;
pub mod settings;

/// The app as configured by the environment, with the dashboard at `/_cohort` for admins. `main`
/// runs it; tests start it in-process.
pub fn app() -> Result<cohort::App, cohort::Error> {
    // `/openapi.json` gets this package's name, version and description.
    Ok(cohort::App::from_env()?
        .api_info(cohort::api_info!())
        .dashboard(accounts::admin))
}
