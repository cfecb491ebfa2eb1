//! The real-server test harness, for Cohort's tests and for users' own: `nats-server` and
//! `redis-server` started per test on free ports, in-process app instances against them, and the
//! conformance suites every broker and state store must pass.
//!
//! Enable it with the `testing` feature: `cohort = { version = "...", features = ["testing"] }`.

mod broker_suite;
mod cluster;
mod servers;
mod store_suite;

pub use broker_suite::{event, run_broker_suite};
pub use cluster::Cluster;
pub use servers::{NatsServer, RedisServer};
pub use store_suite::run_store_suite;
