//! The state store, measured: every operation's duration, and its errors by kind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use super::{Metrics, StoreErrorLabels, StoreLabels};
use crate::error::Error;
use crate::state::spi::{Commit, OutboxEntry, Outcome, StateStore, Versioned};

/// The operations of [`StateStore`], as `db_operation_name` labels.
const OPERATIONS: [&str; 10] = [
    "get",
    "put",
    "delete",
    "compare_and_swap",
    "compare_and_delete",
    "increment",
    "commit",
    "applied",
    "outbox",
    "outbox_remove",
];

/// Indexes into [`OPERATIONS`].
#[derive(Clone, Copy)]
enum Operation {
    Get,
    Put,
    Delete,
    CompareAndSwap,
    CompareAndDelete,
    Increment,
    Commit,
    Applied,
    Outbox,
    OutboxRemove,
}

/// A state store that measures the one under it. `ping` is a health probe, not an operation, and
/// is not measured.
pub(crate) struct MeteredStore {
    store: Arc<dyn StateStore>,
    /// One histogram per operation, in the order of [`OPERATIONS`].
    durations: Vec<Histogram>,
    errors: Family<StoreErrorLabels, Counter>,
}

impl MeteredStore {
    pub(crate) fn new(store: Arc<dyn StateStore>, metrics: &Metrics) -> MeteredStore {
        let durations = OPERATIONS
            .iter()
            .map(|&db_operation_name| {
                let labels = StoreLabels { db_operation_name };
                metrics.store_durations.get_or_create_owned(&labels)
            })
            .collect();
        MeteredStore {
            store,
            durations,
            errors: metrics.store_errors.clone(),
        }
    }

    /// Runs `operation` and records its duration, and its error if it fails.
    async fn measured<T>(
        &self,
        operation: Operation,
        run: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let result = run.await;
        let index = operation as usize;
        self.durations[index].observe(started.elapsed().as_secs_f64());
        if let Err(err) = &result {
            let labels = StoreErrorLabels {
                db_operation_name: OPERATIONS[index],
                error_type: err.kind().code(),
            };
            self.errors.get_or_create(&labels).inc();
        }
        result
    }
}

#[async_trait]
impl StateStore for MeteredStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned<Bytes>>, Error> {
        self.measured(Operation::Get, self.store.get(key)).await
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, Error> {
        self.measured(Operation::Put, self.store.put(key, value, ttl))
            .await
    }

    async fn delete(&self, key: &str) -> Result<bool, Error> {
        self.measured(Operation::Delete, self.store.delete(key))
            .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, Error> {
        let swap = self.store.compare_and_swap(key, expected, value, ttl);
        self.measured(Operation::CompareAndSwap, swap).await
    }

    async fn compare_and_delete(&self, key: &str, expected: u64) -> Result<bool, Error> {
        let delete = self.store.compare_and_delete(key, expected);
        self.measured(Operation::CompareAndDelete, delete).await
    }

    async fn increment(&self, key: &str, by: i64) -> Result<i64, Error> {
        self.measured(Operation::Increment, self.store.increment(key, by))
            .await
    }

    async fn commit(&self, commit: Commit) -> Result<Outcome, Error> {
        self.measured(Operation::Commit, self.store.commit(commit))
            .await
    }

    async fn applied(&self, marker: &str) -> Result<Option<Bytes>, Error> {
        self.measured(Operation::Applied, self.store.applied(marker))
            .await
    }

    async fn outbox(
        &self,
        outbox: &str,
        age: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, Error> {
        let read = self.store.outbox(outbox, age, limit);
        self.measured(Operation::Outbox, read).await
    }

    async fn outbox_remove(&self, outbox: &str, ids: &[String]) -> Result<(), Error> {
        let remove = self.store.outbox_remove(outbox, ids);
        self.measured(Operation::OutboxRemove, remove).await
    }

    fn is_shared(&self) -> bool {
        self.store.is_shared()
    }

    async fn ping(&self) -> Result<(), Error> {
        self.store.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    #[tokio::test]
    async fn operations_are_timed_and_errors_counted_by_kind() {
        let metrics = Metrics::new("i1");
        let store = MeteredStore::new(Arc::new(MemoryStore::new()), &metrics);
        store
            .put("k", Bytes::from_static(b"\"x\""), None)
            .await
            .expect("put");
        store.get("k").await.expect("get");
        let not_a_number = store.increment("k", 1).await;
        assert!(not_a_number.is_err());
        let text = metrics.encode();
        for series in [
            "db_client_operation_duration_seconds_count{db_operation_name=\"put\"} 1",
            "db_client_operation_duration_seconds_count{db_operation_name=\"get\"} 1",
            "db_client_operation_duration_seconds_count{db_operation_name=\"increment\"} 1",
            "db_client_operation_duration_seconds_count{db_operation_name=\"commit\"} 0",
            "cohort_state_errors_total{db_operation_name=\"increment\",error_type=\"conflict\"} 1",
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
    }
}
