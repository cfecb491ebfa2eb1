//! The shared state store: the only place an instance may keep state, sessions included.
//!
//! Handlers use the typed, per-service [`State`] handle that `ctx.state()` returns. Under it is the
//! raw contract [`spi::StateStore`] (bytes and versions), implemented by [`MemoryStore`] (embedded,
//! one process) and `RedisStore` (feature `redis`, on by default: shared by all instances).

mod memory;
#[cfg(feature = "redis")]
mod redis;
pub mod spi;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[cfg(feature = "redis")]
pub use self::redis::RedisStore;
pub use memory::MemoryStore;
use spi::StateStore;
pub use spi::Versioned;

use crate::error::Error;

/// The typed, namespaced view of the state store that handlers get from `ctx.state()`.
///
/// Keys are namespaced by the service, so `"stock:apple"` in service `orders` is stored as
/// `{prefix}:orders:stock:apple` and cannot collide with another service's keys.
#[derive(Clone)]
pub struct State {
    store: Arc<dyn StateStore>,
    namespace: Arc<str>,
}

/// How often `update` retries after losing a race before it gives up with a 409.
const UPDATE_ATTEMPTS: u32 = 32;

impl State {
    /// A view of `store` whose keys all start with `namespace` and a `:`.
    pub(crate) fn new(store: Arc<dyn StateStore>, namespace: impl Into<Arc<str>>) -> Self {
        State {
            store,
            namespace: namespace.into(),
        }
    }

    /// The store under this view.
    pub(crate) fn store(&self) -> &dyn StateStore {
        self.store.as_ref()
    }

    /// The full key in the store.
    pub(crate) fn key(&self, key: &str) -> String {
        crate::runtime::joined(&[&self.namespace, ":", key])
    }

    /// Reads and decodes `key`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        Ok(self.get_versioned(key).await?.map(|v| v.value))
    }

    /// Reads and decodes `key` with its version, for [`State::compare_and_swap`].
    pub async fn get_versioned<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Versioned<T>>, Error> {
        let full = self.key(key);
        match self.store.get(&full).await? {
            None => Ok(None),
            Some(raw) => Ok(Some(Versioned {
                value: decode(&full, &raw.value)?,
                version: raw.version,
            })),
        }
    }

    /// Writes `key`; returns the new version.
    pub async fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<u64, Error> {
        self.store.put(&self.key(key), encode(value)?, None).await
    }

    /// Writes `key` so that it expires after `ttl`; returns the new version.
    pub async fn put_with_ttl<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<u64, Error> {
        self.store
            .put(&self.key(key), encode(value)?, Some(ttl))
            .await
    }

    /// Deletes `key`; `true` when it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        self.store.delete(&self.key(key)).await
    }

    /// Writes `key` only if its version is still `expected` (`None`: only if it does not exist
    /// yet). Returns the new version, or `None` when another write came first.
    pub async fn compare_and_swap<T: Serialize + ?Sized>(
        &self,
        key: &str,
        expected: Option<u64>,
        value: &T,
    ) -> Result<Option<u64>, Error> {
        self.store
            .compare_and_swap(&self.key(key), expected, encode(value)?, None)
            .await
    }

    /// Creates `key` only if it does not exist; `false` when it already did.
    pub async fn insert_new<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<bool, Error> {
        Ok(self.compare_and_swap(key, None, value).await?.is_some())
    }

    /// Adds `by` to the integer at `key` and returns the result. Atomic across instances.
    pub async fn increment(&self, key: &str, by: i64) -> Result<i64, Error> {
        self.store.increment(&self.key(key), by).await
    }

    /// Reads `key`, computes its new value with `f` and writes it back if nobody wrote in between;
    /// on a conflict it reads again and calls `f` again. An `Err` from `f` stops and is returned
    /// (nothing is written), which makes checks such as "not enough stock" atomic with the write.
    pub async fn update<T, F>(&self, key: &str, mut f: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> Result<T, Error>,
    {
        self.update_inner(key, None, &mut f).await
    }

    /// Like [`State::update`], and the key expires `ttl` after the write.
    pub async fn update_with_ttl<T, F>(
        &self,
        key: &str,
        ttl: Duration,
        mut f: F,
    ) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> Result<T, Error>,
    {
        self.update_inner(key, Some(ttl), &mut f).await
    }

    async fn update_inner<T, F>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        f: &mut F,
    ) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> Result<T, Error>,
    {
        let full = self.key(key);
        let mut backoff = crate::unit::FIRST_BACKOFF;
        for _ in 0..UPDATE_ATTEMPTS {
            let (old, version) = match self.store.get(&full).await? {
                Some(raw) => (Some(decode::<T>(&full, &raw.value)?), Some(raw.version)),
                None => (None, None),
            };
            let new = f(old)?;
            let bytes = encode(&new)?;
            if self
                .store
                .compare_and_swap(&full, version, bytes, ttl)
                .await?
                .is_some()
            {
                return Ok(new);
            }
            // A random wait, so that the writers that collided do not collide again.
            tokio::time::sleep(crate::unit::jitter(backoff)).await;
            backoff = (backoff * 2).min(crate::unit::MAX_BACKOFF);
        }
        Err(Error::conflict(format!(
            "`{key}` changed {UPDATE_ATTEMPTS} times while updating it; try again"
        ))
        .with_code("update_contention"))
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("namespace", &self.namespace)
            .finish()
    }
}

pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, Error> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Error::internal(format!("cannot encode a state value: {e}")))
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, raw: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(raw).map_err(|e| {
        Error::internal(format!(
            "state key `{key}` holds a value of another shape: {e}"
        ))
    })
}
