//! What a state store implements: the raw contract [`StateStore`] (full keys, bytes, versions).
//! Cohort ships two ([`MemoryStore`](super::MemoryStore), [`RedisStore`](super::RedisStore)); a
//! third implements [`StateStore`] and proves itself with `cohort::testing::run_store_suite`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Error;
use crate::message::Message;

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

    /// Deletes `key` only if its current version is `expected`; `true` when it did. Atomic: a
    /// lease is released this way, so that a holder whose lease expired and was taken by another
    /// cannot delete the other's.
    async fn compare_and_delete(&self, key: &str, expected: u64) -> Result<bool, Error>;

    /// Adds `by` to the integer at `key` (a missing key counts as 0) and returns the result.
    /// Atomic. The value stays readable as a JSON integer through `get`.
    async fn increment(&self, key: &str, by: i64) -> Result<i64, Error>;

    /// Applies a unit of work all at once or not at all: checks that every key read still has
    /// the version it had, that the marker does not exist yet and that no bounded add goes below
    /// its minimum; then applies every write, appends the events to the outbox `commit.outbox`
    /// and writes the marker. Atomic: no other write comes in between.
    async fn commit(&self, commit: Commit) -> Result<Outcome, Error>;

    /// The result that the marker at `marker` holds, if a unit with that marker was applied
    /// (within the marker's TTL).
    async fn applied(&self, marker: &str) -> Result<Option<Bytes>, Error>;

    /// Entries of the outbox at key `outbox` written at least `age` ago, oldest first, at most
    /// `limit`: events whose unit committed but which no one has published yet.
    async fn outbox(
        &self,
        outbox: &str,
        age: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, Error>;

    /// Removes published entries from the outbox.
    async fn outbox_remove(&self, outbox: &str, ids: &[String]) -> Result<(), Error>;

    /// Whether other instances see the same data (false for the embedded store).
    fn is_shared(&self) -> bool;

    /// Whether the store answers now (for `/readyz`).
    async fn ping(&self) -> Result<(), Error>;
}

/// A unit of work, as [`StateStore::commit`] applies it. All its keys (reads, writes, outbox,
/// marker) share one namespace, whose hash tag keeps them in one slot of a Redis Cluster.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Commit {
    /// Keys the unit read, with the version each must still have (`None`: must still not exist).
    pub reads: Vec<(String, Option<u64>)>,
    /// What the unit writes, in order.
    pub writes: Vec<Write>,
    /// The key of the outbox the events go to.
    pub outbox: String,
    /// The events the unit emits, published once it has committed.
    pub events: Vec<OutboxEvent>,
    /// The proof that the unit was applied (a delivery's event id, an idempotency key): a key that
    /// must not exist yet, written with the unit and holding its result.
    pub marker: Option<Marker>,
}

/// One write of a unit of work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Write {
    /// Writes `value` at `key`, expiring after `ttl` (never without one).
    Put {
        /// The full key.
        key: String,
        /// The value.
        value: Bytes,
        /// When it expires.
        ttl: Option<Duration>,
    },
    /// Deletes `key`.
    Delete {
        /// The full key.
        key: String,
    },
    /// Adds `by` to the integer at `key` (a missing key counts as 0), keeping its TTL; with
    /// `min`, the unit fails with [`Outcome::BelowMin`] instead when the result would be less.
    /// The unit fails with a conflict error naming the key when the key holds no integer or a
    /// sum would pass [`MAX_SUM`] either way.
    Add {
        /// The full key.
        key: String,
        /// The amount, negative to subtract.
        by: i64,
        /// The least the result may be.
        min: Option<i64>,
    },
}

/// The largest sum of a unit's adds, either way: the largest integer a double (a Lua number in a
/// Redis script, a JavaScript number) holds exactly.
pub const MAX_SUM: i64 = (1 << 53) - 1;

/// An event a unit of work emits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Where it is published.
    pub subject: String,
    /// The event, with its message id.
    pub message: Message,
}

/// An event in the outbox: committed, not yet published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Its id in the outbox, for [`StateStore::outbox_remove`].
    pub id: String,
    /// The event.
    pub event: OutboxEvent,
}

/// The proof that a unit of work was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The full key, which must not exist before the unit.
    pub key: String,
    /// The unit's result, replayed to whoever tries to apply the unit again.
    pub value: Bytes,
    /// How long the proof is kept: longer than a retry of the unit can come.
    pub ttl: Duration,
}

/// What became of a unit of work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Applied; the ids of its events in the outbox.
    Committed(Vec<String>),
    /// Nothing applied: this key changed since the unit read it.
    Conflict(String),
    /// Nothing applied: the bounded add at this index of `writes` would go below its minimum.
    BelowMin(usize),
    /// Nothing applied: the marker exists, so the unit was applied before; this is its result.
    Applied(Bytes),
}
