//! The Redis state store: what makes N instances see one state.
//!
//! Each key is a Redis hash `{d: value bytes, v: version}`. Every write goes through a Lua script,
//! so reading the version, checking it and writing the value is one atomic step on the server,
//! whichever instance sends it. Keys arrive fully namespaced from [`State`](super::State); this
//! store adds no prefix of its own.
//!
//! One difference from [`MemoryStore`](super::MemoryStore): Redis forgets an expired key entirely,
//! so a key written again after it expired starts over at version 1 (as after a delete, in both
//! stores).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::cluster::ClusterClientBuilder;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    Client, ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError,
    Script, TlsCertificates,
};

mod connection;
mod unit;

use connection::{Connection, Target, Timeouts};

use super::spi::{Commit, OutboxEntry, Outcome, StateStore, Versioned};
use crate::error::{Error, STORE_UNAVAILABLE};
use crate::outage::Outage;
use crate::redact::mask_urls;
use crate::tls::{REDIS_TLS, TlsFiles, is_tls_failure, tls_advice};

/// The timeouts of every connection: a connection attempt or a command slower than these counts
/// as an outage (every command is one short script, so a healthy server answers far sooner). Few
/// retries per request, so that callers get a 503 at once instead of waiting out a long backoff;
/// the next request tries again.
const TIMEOUTS: Timeouts = Timeouts {
    connection: Duration::from_secs(1),
    response: Duration::from_secs(2),
    retries: 1,
    min_delay: Duration::from_millis(100),
};

/// Writes the value and bumps the version; a put without a TTL makes the key permanent again.
/// `KEYS[1]` = key; `ARGV[1]` = value, `ARGV[2]` = TTL in milliseconds or "" for none.
/// A macro rather than a `const`, so that [`COMPARE_AND_SWAP`] can `concat!` it.
macro_rules! put_script {
    () => {
        r"
local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'd', ARGV[1])
if ARGV[2] == '' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return version
"
    };
}

/// The script of [`put_script!`].
const PUT: &str = put_script!();

/// The put above, done only when the current version is the expected one ("" = key absent).
/// `KEYS[1]` = key; `ARGV[1]` = value, `ARGV[2]` = TTL in milliseconds or "", `ARGV[3]` = expected.
/// Returns the new version, or nil on a mismatch.
const COMPARE_AND_SWAP: &str = concat!(
    r"
local current = redis.call('HGET', KEYS[1], 'v')
if ARGV[3] == '' then
  if current then return false end
elseif current ~= ARGV[3] then
  return false
end",
    put_script!()
);

/// Deletes the key when its version is the expected one. `KEYS[1]` = key; `ARGV[1]` = expected.
/// Returns 1 when it deleted, 0 otherwise.
const COMPARE_AND_DELETE: &str = r"
if redis.call('HGET', KEYS[1], 'v') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Adds to the integer in `d` (absent counts as 0) and bumps the version; the TTL is untouched.
/// `KEYS[1]` = key; `ARGV[1]` = amount. Returns {'ok', new value as a string} (a string, because
/// a Lua number is a double and would round large integers), or {'not_integer'} / {'overflow'}
/// with nothing written. A key that is not a hash stays an error reply, as in the other scripts.
const INCREMENT: &str = r"
local result = redis.pcall('HINCRBY', KEYS[1], 'd', ARGV[1])
if type(result) == 'table' and result.err then
  if string.find(result.err, 'WRONGTYPE') then return result end
  if string.find(result.err, 'overflow') then return {'overflow'} end
  return {'not_integer'}
end
redis.call('HINCRBY', KEYS[1], 'v', 1)
return {'ok', redis.call('HGET', KEYS[1], 'd')}
";

/// State in Redis, shared by every instance.
///
/// It reconnects by itself: during an outage every operation fails fast with
/// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) (a 503 over HTTP), and once Redis is
/// back the next operations succeed again. Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    /// The URL with any password masked, for messages.
    url: String,
    /// The current connection and its generation. The manager reconnects after a dropped
    /// connection by itself, but not after one that merely stopped answering (a frozen server, a
    /// network that drops packets), so a timeout replaces it with a fresh one.
    connection: RwLock<(Connection, u64)>,
    outage: Outage,
    put: Script,
    compare_and_swap: Script,
    compare_and_delete: Script,
    increment: Script,
    units: unit::UnitScripts,
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`, or `rediss://` for TLS trusting
    /// the system's roots; `redis+cluster://[user:password@]host:port[,host:port...]` or
    /// `rediss+cluster://` for a Redis Cluster, found from those seed nodes;
    /// `redis+sentinel://[user:password@]host:port[,host:port...]/master-name[/db]` for the master
    /// that those Redis Sentinels name, asked again after a failover); reconnects by itself after
    /// an outage. Fails with
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) when the URL is malformed or no
    /// Redis answers there.
    pub async fn connect(url: &str) -> Result<RedisStore, Error> {
        Self::connect_with(url, &TlsFiles::default()).await
    }

    /// Like [`RedisStore::connect`], with the CA and client certificate of `tls` for a `rediss://`
    /// URL. Refused credentials, a failed handshake and unreadable files are errors naming the
    /// setting to fix (without the secret).
    pub async fn connect_with(url: &str, tls: &TlsFiles) -> Result<RedisStore, Error> {
        let shown = mask_urls(url);
        let target = open_target(url, &shown, tls)?;
        let mut connection = target
            .connect(&TIMEOUTS)
            .await
            .map_err(|e| explain_connect_error(&e, &shown, tls))?;
        // Redis accepts a connection without credentials and refuses its first command: ask one
        // now, so that a missing password stops the start instead of failing every request.
        redis::cmd("PING")
            .query_async::<()>(&mut connection)
            .await
            .map_err(|e| explain_connect_error(&e, &shown, tls))?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                target,
                url: shown.clone(),
                connection: RwLock::new((connection, 0)),
                outage: Outage::new(format!("the state store (Redis at `{shown}`)")),
                put: Script::new(PUT),
                compare_and_swap: Script::new(COMPARE_AND_SWAP),
                compare_and_delete: Script::new(COMPARE_AND_DELETE),
                increment: Script::new(INCREMENT),
                units: unit::UnitScripts::default(),
            }),
        })
    }

    fn connection(&self) -> (Connection, u64) {
        // A panic cannot happen while the lock is held (it only clones or swaps), so a poisoned
        // lock still holds a sound value.
        let guard = self
            .inner
            .connection
            .read()
            .unwrap_or_else(|p| p.into_inner());
        (guard.0.clone(), guard.1)
    }

    /// Runs one request; a failure becomes a 503 whose cause (logged, never sent) says what was
    /// being done.
    async fn run<T, F, Fut>(&self, doing: impl FnOnce() -> String, request: F) -> Result<T, Error>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let (connection, generation) = self.connection();
        match request(connection).await {
            Ok(reply) => {
                self.inner.outage.back();
                Ok(reply)
            }
            Err(e) => {
                if e.is_timeout() {
                    self.replace_connection(generation);
                }
                if self.inner.target.follows_a_master()
                    && (e.is_io_error() || e.is_timeout() || e.code() == Some("READONLY"))
                {
                    self.follow_master(generation);
                }
                if e.is_io_error() || e.is_timeout() || e.is_unrecoverable_error() {
                    let consequence = "its operations fail (503) meanwhile";
                    self.inner.outage.lost(&e, consequence);
                }
                Err(self.failure(&doing(), &e))
            }
        }
    }

    /// Swaps in a fresh connection unless a concurrent request already did.
    fn replace_connection(&self, generation: u64) {
        if let Some(fresh) = self.inner.target.reconnect(&TIMEOUTS) {
            self.swap_connection(generation, fresh);
        }
    }

    /// Puts `fresh` in place of the connection of `generation`, unless it was replaced already.
    fn swap_connection(&self, generation: u64, fresh: Connection) {
        let mut guard = self
            .inner
            .connection
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if guard.1 == generation {
            *guard = (fresh, generation + 1);
        }
    }

    /// Asks the sentinels for the master again, off the caller's path, and connects to it unless
    /// a concurrent request already did.
    fn follow_master(&self, generation: u64) {
        let store = self.clone();
        tokio::spawn(async move {
            let Some(fresh) = store.inner.target.current_master(&TIMEOUTS).await else {
                return;
            };
            store.swap_connection(generation, fresh);
        });
    }

    fn failure(&self, doing: &str, e: &RedisError) -> Error {
        let url = &self.inner.url;
        if e.code() == Some("WRONGTYPE") {
            // Retrying cannot help: something other than Cohort wrote this key.
            return Error::internal(format!(
                "{doing} on Redis at `{url}` found a key that Cohort did not write: {e}"
            ));
        }
        Error::store_unavailable(format!("{doing} on Redis at `{url}` failed: {e}"))
    }
}

/// What `url` points at, with the TLS files read when the URL asks for TLS.
fn open_target(url: &str, shown: &str, tls: &TlsFiles) -> Result<Target, Error> {
    let invalid = |e: RedisError| {
        Error::unavailable(format!(
            "invalid Redis URL `{shown}`: {e}; set COHORT_REDIS_URL to redis://host:port[/db] \
             (rediss:// for TLS), redis+cluster://host:port[,host:port...] for a Redis Cluster, \
             or redis+sentinel://host:port[,host:port...]/master-name for Redis Sentinel"
        ))
        .with_code(STORE_UNAVAILABLE)
    };
    if let Some(sentinel) = connection::sentinel_url(url) {
        return open_sentinel(sentinel, shown, tls).map_err(invalid);
    }
    let built = match connection::cluster_nodes(url) {
        Some(urls) => {
            let nodes = (urls.iter())
                .map(|node| node.as_str().into_connection_info())
                .collect::<Result<Vec<ConnectionInfo>, _>>()
                .map_err(invalid)?;
            let mut builder = TIMEOUTS.cluster(ClusterClientBuilder::new(nodes.clone()));
            if let Some(certificates) = certificates(&nodes, shown, tls)? {
                builder = builder.certs(certificates);
            }
            builder.build().map(Target::Cluster)
        }
        None => {
            let node = url.into_connection_info().map_err(invalid)?;
            match certificates(std::slice::from_ref(&node), shown, tls)? {
                Some(certificates) => Client::build_with_tls(node, certificates),
                None => Client::open(node),
            }
            .map(Target::Server)
        }
    };
    built.map_err(|e| match tls.is_empty() {
        true => invalid(e),
        false => Error::bad_request(format!(
            "cannot use the TLS files of {}: {e}; they must be PEM",
            set_tls_settings(tls)
        ))
        .with_code("invalid_config"),
    })
}

/// The sentinels of `url`, which name the master. The TLS files are not used with Sentinel yet.
fn open_sentinel(
    url: connection::SentinelUrl,
    shown: &str,
    tls: &TlsFiles,
) -> Result<Target, RedisError> {
    if !tls.is_empty() {
        return Err(RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "the TLS files are not supported with Sentinel yet",
            format!("unset {} for `{shown}`", set_tls_settings(tls)),
        )));
    }
    let master = url.master.as_str().into_connection_info()?;
    let mut node = SentinelNodeConnectionInfo::default()
        .set_redis_connection_info(master.redis_settings().clone());
    if matches!(master.addr(), ConnectionAddr::TcpTls { .. }) {
        node = node.set_tls_mode(redis::TlsMode::Secure);
    }
    let client = SentinelClient::build(
        url.sentinels,
        url.master_name,
        Some(node),
        SentinelServerType::Master,
    )?;
    Ok(Target::Sentinel(tokio::sync::Mutex::new(client)))
}

/// The certificates of the TLS settings, `None` when none is set; an error when some are set but
/// the URL does not use TLS.
fn certificates(
    nodes: &[ConnectionInfo],
    shown: &str,
    tls: &TlsFiles,
) -> Result<Option<TlsCertificates>, Error> {
    if tls.is_empty() {
        return Ok(None);
    }
    let uses_tls = (nodes.iter()).all(|node| matches!(node.addr(), ConnectionAddr::TcpTls { .. }));
    if !uses_tls {
        return Err(Error::bad_request(format!(
            "{} is set, but COHORT_REDIS_URL (`{shown}`) does not use TLS: write it as \
             rediss://host:port",
            set_tls_settings(tls)
        ))
        .with_code("invalid_config"));
    }
    let pem = tls.read(REDIS_TLS)?;
    Ok(Some(TlsCertificates {
        client_tls: pem.client.map(|(client_cert, client_key)| ClientTlsConfig {
            client_cert,
            client_key,
        }),
        root_cert: pem.ca,
    }))
}

/// The names of the TLS settings that are set, for messages.
fn set_tls_settings(tls: &TlsFiles) -> String {
    [
        (tls.ca.is_some(), REDIS_TLS.ca),
        (tls.cert.is_some(), REDIS_TLS.cert),
        (tls.key.is_some(), REDIS_TLS.key),
    ]
    .iter()
    .filter(|(set, _)| *set)
    .map(|(_, name)| *name)
    .collect::<Vec<_>>()
    .join(" and ")
}

/// What a failed first connection tells the operator to fix.
fn explain_connect_error(e: &RedisError, shown: &str, tls: &TlsFiles) -> Error {
    let message = if e.code() == Some("NOAUTH") {
        format!(
            "Redis at `{shown}` requires a password: put it in COHORT_REDIS_URL \
             (redis://user:password@host:6379, or redis://:password@host:6379 for the default user)"
        )
    } else if e.kind() == redis::ErrorKind::AuthenticationFailed || e.code() == Some("WRONGPASS") {
        format!(
            "Redis at `{shown}` refused the credentials ({e}); check the user and password in \
             COHORT_REDIS_URL (redis://user:password@host:6379)"
        )
    } else if shown.starts_with("rediss://") && is_tls_failure(&e.to_string()) {
        format!(
            "TLS with Redis at `{shown}` failed: {e}; {}",
            tls_advice(&e.to_string(), tls, REDIS_TLS)
        )
    } else {
        format!(
            "cannot reach Redis at `{shown}`: {e}; start Redis there or point COHORT_REDIS_URL at \
             a running one"
        )
    };
    Error::unavailable(message).with_code(STORE_UNAVAILABLE)
}

/// The TTL argument of the scripts: whole milliseconds, rounded up so that a sub-millisecond TTL
/// does not delete the key at once.
fn ttl_arg(ttl: Option<Duration>) -> String {
    match ttl {
        None => String::new(),
        Some(ttl) => {
            let millis = ttl.as_nanos().div_ceil(1_000_000);
            u64::try_from(millis).unwrap_or(u64::MAX).to_string()
        }
    }
}

#[async_trait]
impl StateStore for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned<Bytes>>, Error> {
        // One HMGET reads both fields at once, so it is as atomic as a script.
        let (value, version): (Option<Vec<u8>>, Option<u64>) = self
            .run(
                || format!("reading `{key}`"),
                |mut c| async move {
                    redis::cmd("HMGET")
                        .arg(key)
                        .arg("d")
                        .arg("v")
                        .query_async(&mut c)
                        .await
                },
            )
            .await?;
        match (value, version) {
            (Some(value), Some(version)) => Ok(Some(Versioned {
                value: Bytes::from(value),
                version,
            })),
            (None, None) => Ok(None),
            _ => Err(Error::internal(format!(
                "state key `{key}` in Redis at `{}` lacks its value or version; \
                 it was not written by Cohort",
                self.inner.url
            ))),
        }
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<u64, Error> {
        self.run(
            || format!("writing `{key}`"),
            |mut c| async move {
                self.inner
                    .put
                    .key(key)
                    .arg(value.as_ref())
                    .arg(ttl_arg(ttl))
                    .invoke_async(&mut c)
                    .await
            },
        )
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool, Error> {
        let removed: u64 = self
            .run(
                || format!("deleting `{key}`"),
                |mut c| async move { redis::cmd("DEL").arg(key).query_async(&mut c).await },
            )
            .await?;
        Ok(removed > 0)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<u64>,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<Option<u64>, Error> {
        let expected = expected.map(|v| v.to_string()).unwrap_or_default();
        self.run(
            || format!("writing `{key}`"),
            |mut c| async move {
                self.inner
                    .compare_and_swap
                    .key(key)
                    .arg(value.as_ref())
                    .arg(ttl_arg(ttl))
                    .arg(expected)
                    .invoke_async(&mut c)
                    .await
            },
        )
        .await
    }

    async fn compare_and_delete(&self, key: &str, expected: u64) -> Result<bool, Error> {
        let deleted: u64 = self
            .run(
                || format!("deleting `{key}`"),
                |mut c| async move {
                    self.inner
                        .compare_and_delete
                        .key(key)
                        .arg(expected)
                        .invoke_async(&mut c)
                        .await
                },
            )
            .await?;
        Ok(deleted > 0)
    }

    async fn increment(&self, key: &str, by: i64) -> Result<i64, Error> {
        let reply: Vec<String> = self
            .run(
                || format!("incrementing `{key}`"),
                |mut c| async move {
                    self.inner
                        .increment
                        .key(key)
                        .arg(by)
                        .invoke_async(&mut c)
                        .await
                },
            )
            .await?;
        match reply.as_slice() {
            [status, value] if status == "ok" => value.parse().map_err(|_| {
                Error::internal(format!(
                    "Redis returned `{value}` as the new value of `{key}`"
                ))
            }),
            [status] if status == "overflow" => {
                Err(Error::conflict(format!("incrementing `{key}` overflows")))
            }
            [status] if status == "not_integer" => {
                Err(Error::conflict(format!("`{key}` does not hold an integer")))
            }
            other => Err(Error::internal(format!(
                "unexpected reply {other:?} from the increment script for `{key}`"
            ))),
        }
    }

    async fn commit(&self, commit: Commit) -> Result<Outcome, Error> {
        self.commit_unit(commit).await
    }

    async fn applied(&self, marker: &str) -> Result<Option<Bytes>, Error> {
        self.read_marker(marker).await
    }

    async fn outbox(
        &self,
        outbox: &str,
        age: Duration,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, Error> {
        self.read_outbox(outbox, age, limit).await
    }

    async fn outbox_remove(&self, outbox: &str, ids: &[String]) -> Result<(), Error> {
        self.remove_from_outbox(outbox, ids).await
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn ping(&self) -> Result<(), Error> {
        let _: String = self
            .run(
                || "PING".to_owned(),
                |mut c| async move { redis::cmd("PING").query_async(&mut c).await },
            )
            .await?;
        Ok(())
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.url)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_milliseconds() {
        assert_eq!(ttl_arg(None), "");
        assert_eq!(ttl_arg(Some(Duration::from_micros(1))), "1");
        assert_eq!(ttl_arg(Some(Duration::from_millis(300))), "300");
    }
}
