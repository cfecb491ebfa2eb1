//! Redis Sentinel: the state store passes the conformance suite on the master the sentinels name,
//! and follows the master to its replica when it dies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cohort::ErrorKind;
use cohort::state::RedisStore;
use cohort::state::spi::StateStore;
use cohort::testing::{RedisSentinel, eventually_ok, run_store_suite};
use tokio::time::timeout;

/// How long an operation may take while the master is gone: it fails, it does not hang.
const FAILS_WITHIN: Duration = Duration::from_secs(5);
/// How long the store may take to serve again once the sentinels promoted the replica.
const FOLLOWS_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_store_passes_the_suite() {
    let redis = RedisSentinel::start().await;
    let store = RedisStore::connect(&redis.url()).await.expect("connects");
    run_store_suite(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_follows_the_master_to_its_replica_and_keeps_what_was_replicated() {
    let mut redis = RedisSentinel::start().await;
    let store = RedisStore::connect(&redis.url()).await.expect("connects");
    let version = store
        .put("{t}:kept", Bytes::from_static(b"1"), None)
        .await
        .expect("put");
    redis.until_replicated().await;

    let killed = Instant::now();
    redis.kill_master().await;
    let err = timeout(FAILS_WITHIN, store.get("{t}:kept"))
        .await
        .expect("an operation fails fast while the master is gone")
        .expect_err("no master answers");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    redis.until_failed_over().await;
    let kept = eventually_ok("the store serves again", FOLLOWS_WITHIN, async || {
        store.get("{t}:kept").await
    })
    .await;
    assert_eq!(
        kept.map(|v| (v.value, v.version)),
        Some((Bytes::from_static(b"1"), version))
    );
    let written = store.put("{t}:after", Bytes::from_static(b"2"), None).await;
    assert!(written.is_ok(), "the new master takes writes: {written:?}");
    eprintln!(
        "the store served again {:?} after the kill",
        killed.elapsed()
    );
}
