//! Units of work: a handler's reads, writes and events, committed together or not at all
//! ([`Ctx::transaction`]), and the relay that publishes committed events from the outbox.
//!
//! A unit reads through [`Tx::get`] (each key's version is remembered), buffers its writes and
//! events, and commits them in one atomic step of the store, which first checks that nothing it
//! read has changed. On a conflict the whole unit runs again, after a backoff with jitter. Its
//! events go to the outbox in the same step and are published right after; an instance that dies
//! in between leaves them to the relay of any other instance.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Ctx;
use crate::contract::Event;
use crate::error::Error;
use crate::runtime::Runtime;
use crate::state::State;
use crate::state::spi::{Commit, Marker, OutboxEntry, OutboxEvent, Outcome, Write};

/// Attempts of a unit that keeps conflicting before it gives up with a 409.
const MAX_ATTEMPTS: u32 = 32;
/// The first backoff after a conflict; it doubles up to [`MAX_BACKOFF`], and each wait is a random
/// part of it (full jitter), so that the units that collided do not collide again.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(1);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_millis(100);
/// An outbox entry this old is presumed orphaned (its writer died before publishing it).
const ORPHAN_AGE: Duration = Duration::from_secs(2);
/// How often each instance looks for orphaned outbox entries.
const RELAY_INTERVAL: Duration = Duration::from_secs(1);
/// Entries the relay publishes per round.
const RELAY_BATCH: usize = 256;

/// The reads, writes and events of one attempt of a unit of work. See [`Ctx::transaction`].
pub struct Tx {
    state: State,
    ctx: Ctx,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    reads: Vec<(String, Option<u64>)>,
    writes: Vec<Write>,
    /// The error each bounded add fails the unit with, by its index in `writes`.
    refusals: Vec<(usize, Error)>,
    events: Vec<OutboxEvent>,
}

impl Tx {
    fn new(ctx: &Ctx) -> Tx {
        Tx {
            state: ctx.state(),
            ctx: ctx.clone(),
            pending: Mutex::new(Pending::default()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // Plain data, never left half-written.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads `key` (the unit's own puts and deletes included). The unit commits only if the key
    /// still has the version read here.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        let full = self.state.key(key);
        if let Some(own) = self.own_write(&full) {
            return own
                .map(|bytes| crate::state::decode(&full, &bytes))
                .transpose();
        }
        let read = self.state.store().get(&full).await?;
        let version = read.as_ref().map(|r| r.version);
        let mut pending = self.pending();
        if !pending.reads.iter().any(|(k, _)| *k == full) {
            pending.reads.push((full.clone(), version));
        }
        drop(pending);
        read.map(|r| crate::state::decode(&full, &r.value))
            .transpose()
    }

    /// The value the unit itself last put at `full` (`Some(None)`: it deleted it).
    fn own_write(&self, full: &str) -> Option<Option<Bytes>> {
        self.pending()
            .writes
            .iter()
            .rev()
            .find_map(|write| match write {
                Write::Put { key, value, .. } if key == full => Some(Some(value.clone())),
                Write::Delete { key } if key == full => Some(None),
                _ => None,
            })
    }

    /// Writes `key` when the unit commits.
    pub fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        self.write_put(key, value, None)
    }

    /// Writes `key` when the unit commits, expiring `ttl` later.
    pub fn put_with_ttl<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), Error> {
        self.write_put(key, value, Some(ttl))
    }

    fn write_put<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let value = crate::state::encode(value)?;
        let key = self.state.key(key);
        self.pending().writes.push(Write::Put { key, value, ttl });
        Ok(())
    }

    /// Deletes `key` when the unit commits.
    pub fn delete(&self, key: &str) {
        let key = self.state.key(key);
        self.pending().writes.push(Write::Delete { key });
    }

    /// Adds `by` to the integer at `key` (a missing key counts as 0) when the unit commits. Adds
    /// never conflict: two units adding to the same counter both commit, whatever their order.
    /// The unit fails with a conflict error when `key` holds no integer or the sum would pass
    /// ±(2⁵³ − 1), the integers a JSON number keeps exactly in every language.
    pub fn add(&self, key: &str, by: i64) {
        let key = self.state.key(key);
        self.pending()
            .writes
            .push(Write::Add { key, by, min: None });
    }

    /// Takes `amount` from the integer at `key` when the unit commits, or fails the whole unit
    /// with `otherwise` (nothing written) when less than `amount` is left. Like [`Tx::add`], it
    /// never conflicts, so many units can take from one hot stock at once.
    pub fn take(&self, key: &str, amount: u64, otherwise: Error) {
        let key = self.state.key(key);
        let by = i64::try_from(amount).map_or(i64::MIN, |amount| -amount);
        let mut pending = self.pending();
        let index = pending.writes.len();
        pending.refusals.push((index, otherwise));
        pending.writes.push(Write::Add {
            key,
            by,
            min: Some(0),
        });
    }

    /// Emits `event` when the unit commits, as this handler's service.
    pub fn emit<E: Event>(&self, event: &E) -> Result<(), Error> {
        // The producer span closes here: the event leaves with the unit's commit.
        let (subject, message, _producer) = self.ctx.event_message(event)?;
        self.pending().events.push(OutboxEvent { subject, message });
        Ok(())
    }

    fn into_commit(self, outbox: String, marker: Option<Marker>) -> (Commit, Vec<(usize, Error)>) {
        let pending = self.pending.into_inner().unwrap_or_else(|p| p.into_inner());
        let commit = Commit {
            reads: pending.reads,
            writes: pending.writes,
            events: pending.events,
            outbox,
            marker,
        };
        (commit, pending.refusals)
    }
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("state", &self.state).finish()
    }
}

impl Ctx {
    /// Runs `work` as one unit of work: what it writes through its [`Tx`] and the events it emits
    /// commit together, in one atomic step of the shared store, or not at all.
    ///
    /// ```no_run
    /// # use cohort::prelude::*;
    /// # async fn demo(ctx: Ctx, sku: String, qty: u64) -> Result<u64, Error> {
    /// let id = ctx
    ///     .transaction(async move |tx| {
    ///         let out_of_stock = Error::conflict("not enough stock").with_code("insufficient_stock");
    ///         tx.take(&format!("stock:{sku}"), qty, out_of_stock);
    ///         let id = tx.get::<u64>("last_id").await?.unwrap_or(0) + 1;
    ///         tx.put("last_id", &id)?;
    ///         Ok(id)
    ///     })
    ///     .await?;
    /// # Ok(id) }
    /// ```
    ///
    /// Write the closure `async move`, moving in (clones of) what it uses: a closure that borrows
    /// from the handler makes its future not `Send` for the compiler (a current limit of Rust's
    /// async closures).
    ///
    /// - When a key the unit read changed before it could commit, the whole unit runs again
    ///   (after a short random backoff): `work` may run more than once, so it must only act
    ///   through its `Tx`.
    /// - An `Err` from `work` ends it at once, with nothing written.
    /// - In a subscription, a unit is applied once per event: a redelivered event (a lost ack,
    ///   a crash, a timeout) gets the result the unit had the first time instead of applying it
    ///   again (`work` runs again, but its commit finds the event applied). That is why the result
    ///   must be serializable.
    pub async fn transaction<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: AsyncFnMut(&Tx) -> Result<T, Error>,
        T: Serialize + DeserializeOwned,
    {
        run(self, work).await
    }
}

/// Runs `work` as one unit of work: see [`Ctx::transaction`].
async fn run<T, F>(ctx: &Ctx, mut work: F) -> Result<T, Error>
where
    F: AsyncFnMut(&Tx) -> Result<T, Error>,
    T: Serialize + DeserializeOwned,
{
    let runtime = ctx.runtime();
    // The commit checks the marker itself: a redelivery that reaches it gets the first result.
    let marker_key = ctx.next_unit_marker();
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1.. {
        let tx = Tx::new(ctx);
        let result = match work(&tx).await {
            Ok(result) => result,
            Err(err) => return applied_before(runtime, marker_key.as_deref(), err).await,
        };
        let marker = match &marker_key {
            Some(key) => Some(Marker {
                key: key.clone(),
                value: crate::state::encode(&result)?,
                ttl: runtime.config.dedupe_ttl,
            }),
            None => None,
        };
        let outbox = runtime.outbox_key(ctx.service());
        let (commit, refusals) = tx.into_commit(outbox.clone(), marker);
        let events = commit.events.clone();
        match runtime.store.commit(commit).await? {
            Outcome::Committed(ids) => {
                let entries = ids.into_iter().zip(events);
                relay(
                    runtime,
                    outbox,
                    entries
                        .map(|(id, event)| OutboxEntry { id, event })
                        .collect(),
                )
                .await;
                return Ok(result);
            }
            Outcome::Applied(previous) => return replay(&previous),
            Outcome::BelowMin(index) => return Err(refusal(refusals, index)),
            Outcome::Conflict(key) if attempt >= MAX_ATTEMPTS => {
                return Err(Error::conflict(format!(
                    "`{key}` changed {attempt} times while a unit of work read it; try again"
                ))
                .with_code("update_contention"));
            }
            Outcome::Conflict(_) => {
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    unreachable!("the attempts above end in a return")
}

/// The result the unit had when its event was first delivered, or `err` when it was not applied
/// then: on a redelivery, `work` may fail on what the first delivery changed.
async fn applied_before<T: DeserializeOwned>(
    runtime: &Runtime,
    marker_key: Option<&str>,
    err: Error,
) -> Result<T, Error> {
    match marker_key {
        Some(key) => match runtime.store.applied(key).await? {
            Some(applied) => replay(&applied),
            None => Err(err),
        },
        None => Err(err),
    }
}

/// The error the bounded add at `index` of the writes fails its unit with.
fn refusal(refusals: Vec<(usize, Error)>, index: usize) -> Error {
    refusals
        .into_iter()
        .find_map(|(i, err)| (i == index).then_some(err))
        .unwrap_or_else(|| Error::conflict("a bounded add went below its minimum"))
}

fn replay<T: DeserializeOwned>(applied: &[u8]) -> Result<T, Error> {
    crate::state::decode("the result of a unit of work applied before", applied)
}

/// A random wait of up to `limit`.
pub(crate) fn jitter(limit: Duration) -> Duration {
    limit.mul_f64(rand::random::<f64>())
}

/// Publishes `entries` of `outbox` and removes those that went out.
async fn relay(runtime: &Runtime, outbox: String, entries: Vec<OutboxEntry>) {
    if entries.is_empty() {
        return;
    }
    let published = publish(runtime, entries).await;
    runtime.sweeper.sweep(outbox, published);
}

/// Publishes `entries` in order until one fails; the ids of those that went out.
async fn publish(runtime: &Runtime, entries: Vec<OutboxEntry>) -> Vec<String> {
    let mut published = Vec::with_capacity(entries.len());
    for entry in entries {
        let OutboxEvent { subject, message } = entry.event;
        match runtime.broker.publish(&subject, message).await {
            Ok(()) => published.push(entry.id),
            Err(err) => {
                tracing::warn!(subject = %subject, error = %err, "could not publish an event of the outbox; will retry");
                break;
            }
        }
    }
    published
}

/// The relay of this instance: publishes the entries of the outboxes of `services` whose writer
/// did not (it died, or the broker was down), until `stop`.
pub(crate) async fn relay_orphans(
    runtime: std::sync::Arc<Runtime>,
    services: Vec<&'static str>,
    stop: tokio_util::sync::CancellationToken,
) {
    let outboxes: Vec<String> = services.iter().map(|s| runtime.outbox_key(s)).collect();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RELAY_INTERVAL) => {}
        }
        for outbox in &outboxes {
            // A full batch is a backlog (the broker was down): drain it now, not a batch a round.
            while !stop.is_cancelled() && relay_orphans_once(&runtime, outbox).await == RELAY_BATCH
            {
            }
        }
    }
}

/// Publishes and removes one batch of `outbox`'s orphaned entries; how many went out.
async fn relay_orphans_once(runtime: &Runtime, outbox: &str) -> usize {
    let entries = match runtime.store.outbox(outbox, ORPHAN_AGE, RELAY_BATCH).await {
        Ok(entries) if entries.is_empty() => return 0,
        Ok(entries) => entries,
        Err(err) => {
            tracing::debug!(error = %err, "could not read the outbox");
            return 0;
        }
    };
    tracing::info!(events = entries.len(), outbox = %outbox, "relaying events from the outbox");
    let published = publish(runtime, entries).await;
    // Removed before the next batch is read, so that it does not hand out the same entries.
    match runtime.store.outbox_remove(outbox, &published).await {
        Ok(()) => published.len(),
        Err(err) => {
            tracing::warn!(error = %err, "could not remove published events from the outbox");
            0
        }
    }
}
