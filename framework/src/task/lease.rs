//! A lease in the shared store: who may run a task now. Taken with a compare-and-swap on an
//! absent key, kept alive by renewing its TTL while the work runs, released with a
//! compare-and-delete, so that a holder whose lease expired can never delete its successor's.
//!
//! Every acquisition draws a fencing token from a counter key: tokens only grow, across holders
//! and across the lease key's deletions and expiries (after which its version starts over).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::error::Error;
use crate::state::spi::StateStore;

/// A lease this instance holds.
pub(crate) struct Lease {
    store: Arc<dyn StateStore>,
    key: String,
    value: Bytes,
    version: u64,
    ttl: Duration,
    /// The fencing token of this acquisition: larger than every earlier holder's.
    pub(crate) token: u64,
}

/// The lease expired or was taken while the work ran: the work was stopped.
#[derive(Debug)]
pub(crate) struct LeaseLost;

impl Lease {
    /// Takes the lease at `key` for `ttl` unless someone holds it. `tick` and `holder` are written
    /// into it, for whoever looks at the store.
    pub(crate) async fn acquire(
        store: &Arc<dyn StateStore>,
        key: &str,
        fence_key: &str,
        holder: &str,
        tick: u64,
        ttl: Duration,
    ) -> Result<Option<Lease>, Error> {
        if store.get(key).await?.is_some() {
            return Ok(None);
        }
        let token = u64::try_from(store.increment(fence_key, 1).await?).unwrap_or(0);
        let value = crate::state::encode(&serde_json::json!({
            "holder": holder,
            "tick": tick,
            "token": token,
        }))?;
        let taken = store
            .compare_and_swap(key, None, value.clone(), Some(ttl))
            .await?;
        Ok(taken.map(|version| Lease {
            store: store.clone(),
            key: key.to_owned(),
            value,
            version,
            ttl,
            token,
        }))
    }

    /// Runs `work` while renewing the lease every third of its TTL. When a renewal finds the lease
    /// taken, or none succeeds for a whole TTL (the store is unreachable, or this process was
    /// stalled), the lease may be someone else's: the work is dropped and `LeaseLost` returned.
    pub(crate) async fn hold<F: Future>(&mut self, work: F) -> Result<F::Output, LeaseLost> {
        let mut work = std::pin::pin!(work);
        let mut renewed = Instant::now();
        let mut every = tokio::time::interval(self.ttl / 3);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                // The renewal first: a process that resumes after a stall checks its lease before
                // the work goes on.
                biased;
                _ = every.tick() => {
                    if renewed.elapsed() >= self.ttl {
                        return Err(LeaseLost);
                    }
                    match self.renew().await {
                        Ok(true) => renewed = Instant::now(),
                        Ok(false) => return Err(LeaseLost),
                        Err(e) => tracing::warn!(lease = %self.key, error = %e, "cannot renew a task's lease; retrying"),
                    }
                }
                output = &mut work => return Ok(output),
            }
        }
    }

    /// Extends the lease by its TTL; `false` when it is no longer this holder's.
    async fn renew(&mut self) -> Result<bool, Error> {
        let renewed = self
            .store
            .compare_and_swap(
                &self.key,
                Some(self.version),
                self.value.clone(),
                Some(self.ttl),
            )
            .await?;
        if let Some(version) = renewed {
            self.version = version;
        }
        Ok(renewed.is_some())
    }

    /// Gives the lease up, unless it already passed to another holder.
    pub(crate) async fn release(self) {
        if let Err(e) = self.store.compare_and_delete(&self.key, self.version).await {
            // It expires by itself within its TTL.
            tracing::warn!(lease = %self.key, error = %e, "cannot release a task's lease");
        }
    }
}
