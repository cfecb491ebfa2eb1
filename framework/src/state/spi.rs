//! What a state store implements: the raw contract [`StateStore`] (full keys, bytes, versions).
//! Cohort ships two ([`MemoryStore`](super::MemoryStore), [`RedisStore`](super::RedisStore)); a
//! third implements [`StateStore`] and proves itself with `cohort::testing::run_store_suite`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Error;

/// A value together with its version. Every write of a key gives it a new, larger version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version: larger after every write.
    pub version: u64,
}

/// The raw contract of a state store. Keys are full keys (already namespaced); values are bytes.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The value and version of `key`, if it exists and has not expired.
    async fn get(&self, key: &str) -> Result<Option<Versioned<Bytes>>, Error>;

    /// Writes `key` unconditionally and returns its new version. With a TTL the key expires
    /// after it; without one it lives until deleted.
    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, Error>;

    /// Deletes `key`; `true` when it existed.
    async fn delete(&self, key: &str) -> Result<bool, Error>;

    /// Writes `key` only if its current version is `expected` (`None`: only if it does not
    /// exist). Returns the new version, or `None` when the version did not match. Atomic.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, Error>;

    /// Adds `by` to the integer at `key` (a missing key counts as 0) and returns the result.
    /// Atomic. The value stays readable as a JSON integer through `get`.
    async fn increment(&self, key: &str, by: i64) -> Result<i64, Error>;

    /// Whether other instances see the same data (false for the embedded store).
    fn is_shared(&self) -> bool;

    /// Whether the store answers now (for `/readyz`).
    async fn ping(&self) -> Result<(), Error>;
}
