//! The real-server test harness, for Cohort's tests and for users' own: `nats-server` and
//! `redis-server` started per test on free ports, in-process app instances against them, the
//! conformance suites every broker and state store must pass, and ways to wait for what they do.
//!
//! Enable it with the `testing` feature: `cohort = { version = "...", features = ["testing"] }`.

mod broker_suite;
mod cluster;
mod commit_suite;
mod nats_cluster;
mod process;
mod redis_cluster;
mod redis_sentinel;
mod servers;
mod store_suite;
mod wait;

pub use broker_suite::{event, run_broker_suite};
pub use cluster::Cluster;
pub use nats_cluster::NatsCluster;
pub use redis_cluster::RedisCluster;
pub use redis_sentinel::RedisSentinel;
pub use servers::{NatsServer, RedisServer};
pub use store_suite::run_store_suite;
pub use wait::{eventually, eventually_ok, eventually_some, lock};
