//! The embedded state store: a map in this process. Complete for one instance; never shared.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::spi::{
    Commit, MAX_SUM, OutboxEntry, OutboxEvent, Outcome, StateStore, Versioned, Write,
};
use crate::error::Error;

/// State in this process's memory. With many instances each would see its own data, which is why
/// the runtime refuses to combine it with a distributed broker unless told otherwise.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, Entry>>,
    /// Outbox key → its entries, oldest first. Written under the entries' lock, with the unit.
    outboxes: Mutex<HashMap<String, Vec<Queued>>>,
}

/// An event in an outbox.
#[derive(Debug)]
struct Queued {
    id: u64,
    at: Instant,
    event: OutboxEvent,
}

/// Ids of outbox entries, unique in the process.
static NEXT_OUTBOX_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[derive(Debug)]
struct Entry {
    value: Bytes,
    version: u64,
    expires_at: Option<Instant>,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

impl MemoryStore {
    /// An empty store of its own; clone it to share it between in-process instances.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the live entries. The lock is never held across an await, and a panic while
    /// holding it cannot leave a half-written entry behind, so a poisoned lock is still sound.
    fn with_entries<R>(&self, f: impl FnOnce(&mut HashMap<String, Entry>) -> R) -> R {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut entries)
    }

    fn outboxes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Queued>>> {
        // Plain data, never left half-written.
        self.outboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The integer at `key` (0 when absent), or the error of a value that is not one.
    fn integer(entries: &HashMap<String, Entry>, key: &str) -> Result<i64, Error> {
        match Self::live_version(entries, key)
            .0
            .and_then(|_| entries.get(key))
        {
            Some(entry) => serde_json::from_slice::<i64>(&entry.value)
                .map_err(|_| Error::conflict(format!("`{key}` does not hold an integer"))),
            None => Ok(0),
        }
    }

    /// Adds `by` to the integer at `key`, keeping its expiry.
    fn add(entries: &mut HashMap<String, Entry>, key: &str, by: i64) -> Result<i64, Error> {
        let current = Self::integer(entries, key)?;
        let next = current
            .checked_add(by)
            .ok_or_else(|| Error::conflict(format!("incrementing `{key}` overflows")))?;
        let (live, last) = Self::live_version(entries, key);
        let expires_at = live
            .and_then(|_| entries.get(key))
            .and_then(|e| e.expires_at);
        Self::write(entries, key, Bytes::from(next.to_string()), None, last);
        if let Some(entry) = entries.get_mut(key) {
            entry.expires_at = expires_at;
        }
        Ok(next)
    }

    /// Why `commit` cannot apply, checked before anything is written.
    fn refusal(
        entries: &HashMap<String, Entry>,
        commit: &Commit,
    ) -> Result<Option<Outcome>, Error> {
        for (key, expected) in &commit.reads {
            if Self::live_version(entries, key).0 != *expected {
                return Ok(Some(Outcome::Conflict(key.clone())));
            }
        }
        if let Some(marker) = &commit.marker
            && let Some(entry) = entries
                .get(&marker.key)
                .filter(|e| e.is_live(Instant::now()))
        {
            return Ok(Some(Outcome::Applied(entry.value.clone())));
        }
        let mut pending: HashMap<&str, i64> = HashMap::new();
        for (index, write) in commit.writes.iter().enumerate() {
            if let Write::Add { key, by, min } = write {
                let sum = pending.entry(key).or_insert(Self::integer(entries, key)?);
                *sum = (sum.checked_add(*by))
                    .filter(|sum| (-MAX_SUM..=MAX_SUM).contains(sum))
                    .ok_or_else(|| Error::conflict(format!("adding to `{key}` overflows")))?;
                if min.is_some_and(|min| *sum < min) {
                    return Ok(Some(Outcome::BelowMin(index)));
                }
            }
        }
        Ok(None)
    }

    /// Writes `key` at the version after `current`, dropping expired entries now and then so a
    /// store full of session keys does not grow without end.
    fn write(
        entries: &mut HashMap<String, Entry>,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        current: u64,
    ) -> u64 {
        let now = Instant::now();
        if entries.len() % 1024 == 1023 {
            entries.retain(|_, entry| entry.is_live(now));
        }
        let version = current + 1;
        entries.insert(
            key.to_owned(),
            Entry {
                value,
                version,
                expires_at: ttl.map(|ttl| now + ttl),
            },
        );
        version
    }

    /// The version of `key` (0 when it does not exist or expired). Versions stay increasing even
    /// across expiry, so a stale compare-and-swap can never match a recreated key.
    fn live_version(entries: &HashMap<String, Entry>, key: &str) -> (Option<u64>, u64) {
        match entries.get(key) {
            Some(entry) if entry.is_live(Instant::now()) => (Some(entry.version), entry.version),
            Some(entry) => (None, entry.version),
            None => (None, 0),
        }
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned<Bytes>>, Error> {
        let now = Instant::now();
        Ok(self.with_entries(|entries| {
            entries
                .get(key)
                .filter(|e| e.is_live(now))
                .map(|e| Versioned {
                    value: e.value.clone(),
                    version: e.version,
                })
        }))
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, Error> {
        Ok(self.with_entries(|entries| {
            let (_, last) = Self::live_version(entries, key);
            Self::write(entries, key, value, ttl, last)
        }))
    }

    async fn delete(&self, key: &str) -> Result<bool, Error> {
        let now = Instant::now();
        Ok(self.with_entries(|entries| entries.remove(key).is_some_and(|e| e.is_live(now))))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, Error> {
        Ok(self.with_entries(|entries| {
            let (live, last) = Self::live_version(entries, key);
            (live == expected).then(|| Self::write(entries, key, value, ttl, last))
        }))
    }

    async fn compare_and_delete(&self, key: &str, expected: u64) -> Result<bool, Error> {
        Ok(self.with_entries(|entries| {
            let matches = Self::live_version(entries, key).0 == Some(expected);
            if matches {
                entries.remove(key);
            }
            matches
        }))
    }

    async fn increment(&self, key: &str, by: i64) -> Result<i64, Error> {
        self.with_entries(|entries| Self::add(entries, key, by))
    }

    async fn commit(&self, commit: Commit) -> Result<Outcome, Error> {
        self.with_entries(|entries| {
            if let Some(refused) = Self::refusal(entries, &commit)? {
                return Ok(refused);
            }
            for write in commit.writes {
                match write {
                    Write::Put { key, value, ttl } => {
                        let (_, last) = Self::live_version(entries, &key);
                        Self::write(entries, &key, value, ttl, last);
                    }
                    Write::Delete { key } => {
                        entries.remove(&key);
                    }
                    Write::Add { key, by, .. } => {
                        Self::add(entries, &key, by)?;
                    }
                }
            }
            if let Some(marker) = commit.marker {
                let (_, last) = Self::live_version(entries, &marker.key);
                Self::write(entries, &marker.key, marker.value, Some(marker.ttl), last);
            }
            let now = Instant::now();
            let queued: Vec<Queued> = commit
                .events
                .into_iter()
                .map(|event| Queued {
                    id: NEXT_OUTBOX_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    at: now,
                    event,
                })
                .collect();
            let ids = queued.iter().map(|q| q.id.to_string()).collect();
            self.outboxes()
                .entry(commit.outbox)
                .or_default()
                .extend(queued);
            Ok(Outcome::Committed(ids))
        })
    }

    async fn applied(&self, marker: &str) -> Result<Option<Bytes>, Error> {
        Ok(self.get(marker).await?.map(|applied| applied.value))
    }

    async fn outbox(
        &self,
        outbox: &str,
        age: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, Error> {
        let now = Instant::now();
        Ok(self
            .outboxes()
            .get(outbox)
            .into_iter()
            .flatten()
            .take_while(|queued| now.saturating_duration_since(queued.at) >= age)
            .take(limit)
            .map(|queued| OutboxEntry {
                id: queued.id.to_string(),
                event: queued.event.clone(),
            })
            .collect())
    }

    async fn outbox_remove(&self, outbox: &str, ids: &[String]) -> Result<(), Error> {
        if let Some(queued) = self.outboxes().get_mut(outbox) {
            queued.retain(|q| !ids.contains(&q.id.to_string()));
        }
        Ok(())
    }

    fn is_shared(&self) -> bool {
        false
    }

    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }
}
