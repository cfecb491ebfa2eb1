//! The state stores: both pass the conformance suite, and the Redis store survives outages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cohort::ErrorKind;
use cohort::state::spi::{Commit, Marker, Outcome, StateStore, Write};
use cohort::state::{MemoryStore, RedisStore};
use cohort::testing::{RedisServer, eventually_ok, run_store_suite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// How long a failing operation may take during an outage. Far more than the store's own
/// timeouts: this checks that it fails instead of hanging, not how fast.
const FAILS_WITHIN: Duration = Duration::from_secs(10);
/// How long the store may take to serve again once Redis is back.
const RECOVERS_WITHIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_suite() {
    run_store_suite(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_suite() {
    let redis = RedisServer::start().await;
    let store = connect(&redis.url()).await;
    assert!(
        store.is_shared(),
        "the Redis store is shared by every instance"
    );
    store.ping().await.expect("ping");
    run_store_suite(Arc::new(store)).await;
}

/// Before markers were strings, a unit's marker was a hash holding its result in `d`: such a
/// marker, within its TTL after an upgrade, still marks its unit as applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marker_kept_as_a_hash_by_an_older_version_still_counts() {
    let redis = RedisServer::start().await;
    let store = connect(&redis.url()).await;
    let mut raw = redis::Client::open(redis.url())
        .and_then(|client| client.get_connection())
        .expect("connect a plain client");
    let (marker, result) = ("{old}:applied", Bytes::from_static(b"{\"n\":1}"));
    let _: () = redis::cmd("HSET")
        .arg(marker)
        .arg("d")
        .arg(result.as_ref())
        .arg("v")
        .arg(1)
        .query(&mut raw)
        .expect("write a hash marker");
    let mut unit = Commit::default();
    unit.outbox = "{old}:outbox".to_owned();
    unit.writes = vec![Write::Add {
        key: "{old}:n".to_owned(),
        by: 1,
        min: None,
    }];
    unit.marker = Some(Marker {
        key: marker.to_owned(),
        value: Bytes::from_static(b"{}"),
        ttl: Duration::from_secs(60),
    });
    assert_eq!(
        store.commit(unit).await.expect("commit"),
        Outcome::Applied(result.clone())
    );
    assert_eq!(store.applied(marker).await.expect("read"), Some(result));
    assert_eq!(
        store.get("{old}:n").await.expect("get"),
        None,
        "not applied again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_see_each_others_writes() {
    let redis = RedisServer::start().await;
    let (a, b) = (connect(&redis.url()).await, connect(&redis.url()).await);
    let version = a
        .put("shared:k", Bytes::from_static(b"1"), None)
        .await
        .expect("put on a");
    let seen = b.get("shared:k").await.expect("get on b");
    assert_eq!(
        seen.map(|v| (v.value, v.version)),
        Some((Bytes::from_static(b"1"), version))
    );
    assert_eq!(b.increment("shared:k", 1).await.expect("increment on b"), 2);
    assert_eq!(a.increment("shared:k", 1).await.expect("increment on a"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_unavailable_then_service_resumes() {
    let mut redis = RedisServer::start().await;
    let store = connect(&redis.url()).await;
    store
        .put("outage:k", Bytes::from_static(b"1"), None)
        .await
        .expect("put before the outage");

    redis.stop().await;
    // Several rounds: the first meets the dropped connection, later ones failed reconnections.
    for _ in 0..3 {
        assert_unavailable("get", store.get("outage:k")).await;
        assert_unavailable("put", store.put("outage:k", Bytes::from_static(b"2"), None)).await;
        assert_unavailable("increment", store.increment("outage:n", 1)).await;
        assert_unavailable(
            "compare_and_swap",
            store.compare_and_swap("outage:k", None, Bytes::new(), None),
        )
        .await;
        assert_unavailable("delete", store.delete("outage:k")).await;
        assert_unavailable("ping", store.ping()).await;
    }

    redis.restart().await;
    eventually_serves(&store).await;
    assert_eq!(
        store
            .increment("outage:n", 1)
            .await
            .expect("increment after the outage"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_is_unavailable_then_service_resumes() {
    let redis = RedisServer::start().await;
    let proxy = FreezableProxy::start(redis.port()).await;
    let store = connect(&proxy.url()).await;
    store
        .put("frozen:k", Bytes::from_static(b"1"), None)
        .await
        .expect("put before the freeze");

    // The connection stays open, but nothing comes back: only a timeout can notice.
    proxy.freeze();
    assert_unavailable("get", store.get("frozen:k")).await;
    assert_unavailable("put", store.put("frozen:k", Bytes::from_static(b"2"), None)).await;
    assert_unavailable("ping", store.ping()).await;

    // The frozen connections stay dead, as half-open TCP connections do: the store must open
    // new ones.
    proxy.thaw();
    eventually_serves(&store).await;
    let value = store
        .get("frozen:k")
        .await
        .expect("get after the freeze")
        .map(|v| v.value);
    assert_eq!(value, Some(Bytes::from_static(b"1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_server_is_unavailable_then_service_resumes() {
    let redis = RedisServer::start().await;
    let store = connect(&redis.url()).await;
    store
        .increment("sigstop:n", 1)
        .await
        .expect("increment before the freeze");
    redis.freeze().await;
    assert_unavailable("get", store.get("sigstop:n")).await;
    redis.thaw().await;
    eventually_serves(&store).await;
    let n = store.increment("sigstop:n", 1).await;
    assert_eq!(n.expect("increment after the thaw"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_redis_keeps_what_it_acknowledged_across_a_stop_or_a_kill() {
    let mut redis = RedisServer::start_durable().await;
    let store = connect(&redis.url()).await;
    let n = store.increment("durable:n", 41).await;
    assert_eq!(n.expect("increment before the stop"), 41);

    redis.terminate().await;
    assert_unavailable("increment", store.increment("durable:n", 1)).await;
    redis.restart().await;
    eventually_serves(&store).await;
    let n = store.increment("durable:n", 1).await;
    assert_eq!(n.expect("increment after a SIGTERM"), 42);

    redis.stop().await;
    redis.restart().await;
    eventually_serves(&store).await;
    let n = store.increment("durable:n", 1).await;
    assert_eq!(n.expect("increment after a SIGKILL"), 43);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_cohort_did_not_write_is_an_internal_error_not_an_outage() {
    let redis = RedisServer::start().await;
    let mut raw = TcpStream::connect(("127.0.0.1", redis.port()))
        .await
        .expect("connect");
    raw.write_all(b"SET foreign:k text\r\n")
        .await
        .expect("send SET");
    let mut reply = [0; 3];
    raw.read_exact(&mut reply)
        .await
        .expect("read the reply to SET");
    assert_eq!(&reply, b"+OK");

    let store = connect(&redis.url()).await;
    let failures = [
        ("get", store.get("foreign:k").await.map(drop)),
        (
            "put",
            store.put("foreign:k", Bytes::new(), None).await.map(drop),
        ),
        ("increment", store.increment("foreign:k", 1).await.map(drop)),
        (
            "compare_and_swap",
            store
                .compare_and_swap("foreign:k", None, Bytes::new(), None)
                .await
                .map(drop),
        ),
    ];
    for (what, result) in failures {
        let err = result.expect_err(&format!("{what} of a plain Redis string must fail"));
        assert_eq!(
            err.kind(),
            ErrorKind::Internal,
            "{what} of a plain Redis string: {err}"
        );
    }
}

#[tokio::test]
async fn connecting_to_no_redis_says_how_to_fix_it() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let url = format!("redis://127.0.0.1:{}", free.port());
    let err = timeout(FAILS_WITHIN, RedisStore::connect(&url))
        .await
        .expect("connect must fail fast, not hang")
        .expect_err("connect to a port where no Redis listens must fail");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.message().contains(&url),
        "the error must name the URL: {err}"
    );
    assert!(
        err.message().contains("COHORT_REDIS_URL"),
        "the error must say what to fix: {err}"
    );

    let err = RedisStore::connect("http://user:hunter2@localhost")
        .await
        .expect_err("connect with a URL that is not Redis's must fail");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.message().contains("COHORT_REDIS_URL"),
        "the error must say what to fix: {err}"
    );
    assert!(
        !err.message().contains("hunter2"),
        "the error must not show the password: {err}"
    );
}

async fn connect(url: &str) -> RedisStore {
    RedisStore::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

async fn assert_unavailable<T: std::fmt::Debug>(
    what: &str,
    operation: impl Future<Output = Result<T, cohort::Error>>,
) {
    let result = timeout(FAILS_WITHIN, operation).await.unwrap_or_else(|_| {
        panic!("{what} must fail within {FAILS_WITHIN:?} while Redis is down, not hang")
    });
    let err = result.expect_err(&format!("{what} must fail while Redis is down"));
    assert_eq!(
        err.kind(),
        ErrorKind::Unavailable,
        "{what} during an outage: {err}"
    );
    assert_eq!(err.code(), "state_store_unavailable", "{what}: {err}");
    assert_eq!(err.message(), "the state store is unavailable", "{what}");
    let cause = err.cause().unwrap_or_default();
    assert!(
        cause.contains("on Redis at `redis://127.0.0.1:"),
        "{what}: the cause names the server, for the log: {err}"
    );
}

/// Waits until the store answers reads and writes again; meanwhile every failure must be an outage.
async fn eventually_serves(store: &RedisStore) {
    let what = "the store must serve again once Redis is back";
    let read = eventually_ok(what, RECOVERS_WITHIN, async || {
        let outcome = async {
            store.ping().await?;
            store
                .put("recovered:k", Bytes::from_static(b"1"), None)
                .await?;
            store.get("recovered:k").await
        }
        .await;
        if let Err(e) = &outcome {
            assert_eq!(e.kind(), ErrorKind::Unavailable, "while recovering: {e}");
        }
        outcome
    })
    .await;
    assert!(read.is_some(), "a key just written must be readable");
}

/// A TCP proxy in front of Redis that can stop forwarding without closing connections, the way a
/// frozen server or a network that drops packets looks to a client.
struct FreezableProxy {
    port: u16,
    frozen: Arc<AtomicBool>,
    /// Connections of an older epoch never forward again; `freeze` and `thaw` start a new one.
    epoch: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl FreezableProxy {
    async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let epoch = Arc::new(AtomicU64::new(0));
        let (frozen_in, epoch_in) = (frozen.clone(), epoch.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (frozen, epoch) = (frozen_in.clone(), epoch_in.clone());
                let born = epoch.load(Ordering::SeqCst);
                let alive =
                    move || !frozen.load(Ordering::SeqCst) && epoch.load(Ordering::SeqCst) == born;
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, alive.clone()));
                tokio::spawn(forward(server_read, client_write, alive));
            }
        });
        FreezableProxy {
            port,
            frozen,
            epoch,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn thaw(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies bytes while `alive` holds; then keeps both ends open and silent forever.
async fn forward(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    alive: impl Fn() -> bool,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if !alive() {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
