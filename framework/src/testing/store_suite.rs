//! The conformance suite of [`StateStore`]: what every store must do, so that an app behaves the
//! same on the embedded store in development and on Redis in production.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::eventually;
use crate::error::{Error, ErrorKind};
use crate::state::State;
use crate::state::spi::StateStore;

/// A TTL short enough to wait for in a test.
const SHORT_TTL: Duration = Duration::from_millis(300);
/// How long an expired key may still be visible, beyond its TTL, before the suite fails. Generous:
/// the suite checks that keys expire, not how precisely.
const EXPIRY_GRACE: Duration = Duration::from_secs(5);

/// Runs the conformance suite against `store`, panicking with a message that names the first
/// contract it breaks.
///
/// Keys live under a random prefix, so several runs may share one server. The suite takes about a
/// second, most of it waiting for short TTLs to pass.
///
/// ```no_run
/// # async fn demo() {
/// use std::sync::Arc;
/// cohort::testing::run_store_suite(Arc::new(cohort::state::MemoryStore::new())).await;
/// # }
/// ```
pub async fn run_store_suite(store: Arc<dyn StateStore>) {
    let prefix = unique_prefix();
    let key = |name: &str| format!("{prefix}:{name}");

    missing_keys(&*store, &key("missing")).await;
    put_and_get(&*store, &key("put")).await;
    delete(&*store, &key("delete")).await;
    compare_and_swap(&*store, &key("cas")).await;
    compare_and_delete(&*store, &key("cad")).await;
    increment(&*store, &key("incr")).await;
    expiry(&*store, &key("ttl")).await;
    concurrent_increments(&store, &key("concurrent-incr")).await;
    concurrent_updates(&store, &format!("{prefix}:concurrent-update")).await;
    namespaces(&store, &format!("{prefix}:ns")).await;
    failed_update_writes_nothing(&store, &format!("{prefix}:abort")).await;
    super::commit_suite::run(&*store, &format!("{prefix}:unit")).await;
}

/// A prefix no other run uses, so that runs sharing a server cannot see each other's keys. A hash
/// tag, as Cohort's namespaces are: a unit of work's keys must all be in one Redis Cluster slot.
fn unique_prefix() -> String {
    format!("{{store-suite-{}}}", crate::message::random_hex(8))
}

async fn missing_keys(store: &dyn StateStore, key: &str) {
    let got = store.get(key).await.expect("get of a missing key");
    assert_eq!(got, None, "get of a key never written must be None");
    let existed = store.delete(key).await.expect("delete of a missing key");
    assert!(!existed, "delete of a key never written must return false");
}

async fn put_and_get(store: &dyn StateStore, key: &str) {
    let first = store.put(key, json("\"hello\""), None).await.expect("put");
    assert_eq!(
        store.get(key).await.expect("get after put"),
        Some(versioned("\"hello\"", first)),
        "get must return what put wrote, at the version put returned"
    );

    let second = store
        .put(key, json("{\"n\":2}"), None)
        .await
        .expect("second put");
    assert!(
        second > first,
        "a put must increase the version: {first} then {second}"
    );
    assert_eq!(
        store.get(key).await.expect("get after second put"),
        Some(versioned("{\"n\":2}", second)),
        "get must return the latest put"
    );

    // Values are bytes: the store must not assume text, nor drop an empty value.
    for value in [Bytes::from_static(&[0, 255, 13, 10, 0]), Bytes::new()] {
        store
            .put(key, value.clone(), None)
            .await
            .expect("put of raw bytes");
        let got = store
            .get(key)
            .await
            .expect("get of raw bytes")
            .map(|v| v.value);
        assert_eq!(got, Some(value), "raw bytes must round-trip unchanged");
    }
}

async fn delete(store: &dyn StateStore, key: &str) {
    store
        .put(key, json("1"), None)
        .await
        .expect("put before delete");
    assert!(
        store.delete(key).await.expect("delete"),
        "delete of an existing key must return true"
    );
    assert_eq!(
        store.get(key).await.expect("get after delete"),
        None,
        "a deleted key must be gone"
    );
    assert!(
        !store.delete(key).await.expect("second delete"),
        "deleting twice must return false the second time"
    );
}

async fn compare_and_swap(store: &dyn StateStore, key: &str) {
    let created = store
        .compare_and_swap(key, None, json("\"a\""), None)
        .await
        .expect("compare_and_swap creating a key")
        .unwrap_or_else(|| panic!("compare_and_swap with None must create a missing key"));

    let again = store
        .compare_and_swap(key, None, json("\"b\""), None)
        .await
        .expect("compare_and_swap");
    assert_eq!(
        again, None,
        "compare_and_swap with None must fail when the key exists"
    );

    let wrong = store
        .compare_and_swap(key, Some(created + 100), json("\"c\""), None)
        .await
        .expect("compare_and_swap");
    assert_eq!(
        wrong, None,
        "compare_and_swap with a wrong version must fail"
    );
    let wrong = store
        .compare_and_swap(&format!("{key}-absent"), Some(created), json("\"c\""), None)
        .await
        .expect("compare_and_swap");
    assert_eq!(
        wrong, None,
        "compare_and_swap with a version must fail when the key does not exist"
    );
    assert_eq!(
        store.get(key).await.expect("get"),
        Some(versioned("\"a\"", created)),
        "a failed compare_and_swap must not write"
    );

    let swapped = store
        .compare_and_swap(key, Some(created), json("\"d\""), None)
        .await
        .expect("compare_and_swap")
        .unwrap_or_else(|| panic!("compare_and_swap with the current version must succeed"));
    assert!(
        swapped > created,
        "compare_and_swap must increase the version: {created} then {swapped}"
    );
    assert_eq!(
        store.get(key).await.expect("get"),
        Some(versioned("\"d\"", swapped))
    );

    let stale = store
        .compare_and_swap(key, Some(created), json("\"e\""), None)
        .await
        .expect("compare_and_swap");
    assert_eq!(
        stale, None,
        "compare_and_swap with an outdated version must fail"
    );
}

async fn compare_and_delete(store: &dyn StateStore, key: &str) {
    assert!(
        !store
            .compare_and_delete(key, 1)
            .await
            .expect("compare_and_delete"),
        "compare_and_delete of a missing key must return false"
    );
    let first = store
        .put(key, json("1"), Some(Duration::from_secs(60)))
        .await
        .expect("put");
    let second = store.put(key, json("2"), None).await.expect("put");
    assert!(
        !store
            .compare_and_delete(key, first)
            .await
            .expect("compare_and_delete"),
        "compare_and_delete with an outdated version must fail"
    );
    assert_eq!(
        store.get(key).await.expect("get"),
        Some(versioned("2", second)),
        "a failed compare_and_delete must not delete"
    );
    assert!(
        store
            .compare_and_delete(key, second)
            .await
            .expect("compare_and_delete"),
        "compare_and_delete with the current version must delete"
    );
    assert_eq!(store.get(key).await.expect("get"), None, "deleted");
}

async fn increment(store: &dyn StateStore, key: &str) {
    assert_eq!(
        store.increment(key, 5).await.expect("increment"),
        5,
        "a missing key counts as 0"
    );
    assert_eq!(store.increment(key, 5).await.expect("increment"), 10);
    assert_eq!(
        store.increment(key, -20).await.expect("increment"),
        -10,
        "negative amounts subtract"
    );
    let first = store.get(key).await.expect("get").map(|v| v.version);
    assert_eq!(store.increment(key, 0).await.expect("increment"), -10);
    let raw = store.get(key).await.expect("get after increment");
    let raw = raw.unwrap_or_else(|| panic!("an incremented key must exist"));
    assert_eq!(
        serde_json::from_slice::<i64>(&raw.value).ok(),
        Some(-10),
        "an incremented value must read as a JSON integer, got {:?}",
        String::from_utf8_lossy(&raw.value)
    );
    assert!(
        Some(raw.version) > first,
        "an increment must increase the version"
    );

    let counter = format!("{key}-from-put");
    store.put(&counter, json("41"), None).await.expect("put");
    assert_eq!(
        store.increment(&counter, 1).await.expect("increment"),
        42,
        "increment must add to a put integer"
    );

    for not_an_integer in ["\"text\"", "1.5", "{\"n\":1}"] {
        let text = format!("{key}-not-an-integer");
        let version = store
            .put(&text, json(not_an_integer), None)
            .await
            .expect("put");
        let err = store
            .increment(&text, 1)
            .await
            .expect_err("increment of a value that is not an integer must fail");
        assert_eq!(
            err.kind(),
            ErrorKind::Conflict,
            "increment of {not_an_integer} must be a Conflict: {err}"
        );
        assert_eq!(
            store.get(&text).await.expect("get"),
            Some(versioned(not_an_integer, version)),
            "a failed increment must not write"
        );
    }

    let full = format!("{key}-overflow");
    store
        .put(&full, json(&i64::MAX.to_string()), None)
        .await
        .expect("put");
    let err = store
        .increment(&full, 1)
        .await
        .expect_err("an overflowing increment must fail");
    assert_eq!(
        err.kind(),
        ErrorKind::Conflict,
        "an overflowing increment must be a Conflict: {err}"
    );
}

/// Every TTL case in one place, so that the suite waits for expiry once.
async fn expiry(store: &dyn StateStore, key: &str) {
    let put_key = format!("{key}-put");
    let cas_key = format!("{key}-cas");
    let incr_key = format!("{key}-incr");
    let kept_key = format!("{key}-kept");
    let long_key = format!("{key}-long");

    store
        .put(&put_key, json("1"), Some(SHORT_TTL))
        .await
        .expect("put with a TTL");
    store
        .compare_and_swap(&cas_key, None, json("1"), Some(SHORT_TTL))
        .await
        .expect("compare_and_swap with a TTL");
    store
        .put(&incr_key, json("1"), Some(SHORT_TTL))
        .await
        .expect("put with a TTL");
    store
        .increment(&incr_key, 1)
        .await
        .expect("increment of a key with a TTL");
    // A put without a TTL makes a key permanent again.
    store
        .put(&kept_key, json("1"), Some(SHORT_TTL))
        .await
        .expect("put with a TTL");
    store
        .put(&kept_key, json("2"), None)
        .await
        .expect("put without a TTL");
    store
        .put(&long_key, json("1"), Some(Duration::from_secs(600)))
        .await
        .expect("put with a long TTL");

    for (expiring, what) in [
        (&put_key, "a key put with a TTL"),
        (&cas_key, "a key written by compare_and_swap with a TTL"),
        (
            &incr_key,
            "a key with a TTL, after an increment (increment must keep the TTL)",
        ),
    ] {
        wait_until_gone(store, expiring, what).await;
    }

    assert_eq!(
        store.get(&kept_key).await.expect("get").map(|v| v.value),
        Some(json("2")),
        "a put without a TTL must remove the key's earlier TTL"
    );
    assert!(
        store.get(&long_key).await.expect("get").is_some(),
        "a key must live until its TTL"
    );
    assert!(
        store
            .compare_and_swap(&put_key, None, json("2"), None)
            .await
            .expect("compare_and_swap")
            .is_some(),
        "compare_and_swap with None must succeed on an expired key"
    );
    assert!(
        !store.delete(&cas_key).await.expect("delete"),
        "delete of an expired key must return false"
    );
}

async fn wait_until_gone(store: &dyn StateStore, key: &str, what: &str) {
    let still_there = format!(
        "{what} must expire: it still exists {EXPIRY_GRACE:?} after its TTL of {SHORT_TTL:?}"
    );
    eventually(&still_there, SHORT_TTL + EXPIRY_GRACE, async || {
        let value = store.get(key).await.expect("get of an expiring key");
        value.is_none()
    })
    .await;
}

async fn concurrent_increments(store: &Arc<dyn StateStore>, key: &str) {
    const TASKS: i64 = 8;
    const EACH: i64 = 50;
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (store, key) = (store.clone(), key.to_owned());
            tokio::spawn(async move {
                for _ in 0..EACH {
                    store
                        .increment(&key, 1)
                        .await
                        .expect("concurrent increment");
                }
            })
        })
        .collect();
    join_all(tasks).await;
    assert_eq!(
        store.increment(key, 0).await.expect("increment"),
        TASKS * EACH,
        "{TASKS} tasks incrementing {EACH} times each must lose no increment"
    );
}

async fn concurrent_updates(store: &Arc<dyn StateStore>, namespace: &str) {
    // Few enough tasks that none runs out of `update`'s retries while the others keep winning.
    const TASKS: u64 = 5;
    const EACH: u64 = 20;
    let state = State::new(store.clone(), namespace);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let state = state.clone();
            tokio::spawn(async move {
                for _ in 0..EACH {
                    state
                        .update::<u64, _>("counter", |n| Ok(n.unwrap_or(0) + 1))
                        .await
                        .expect("concurrent update");
                }
            })
        })
        .collect();
    join_all(tasks).await;
    assert_eq!(
        state.get::<u64>("counter").await.expect("get"),
        Some(TASKS * EACH),
        "{TASKS} tasks updating one counter {EACH} times each must lose no update"
    );
}

async fn namespaces(store: &Arc<dyn StateStore>, prefix: &str) {
    let a = State::new(store.clone(), format!("{prefix}:a"));
    let b = State::new(store.clone(), format!("{prefix}:b"));

    a.put("k", "from a").await.expect("put");
    assert_eq!(
        b.get::<String>("k").await.expect("get"),
        None,
        "a key of one namespace must be invisible in another"
    );
    b.put("k", "from b").await.expect("put");
    assert_eq!(
        a.get::<String>("k").await.expect("get").as_deref(),
        Some("from a"),
        "namespaces must not collide"
    );
    assert_eq!(
        b.get::<String>("k").await.expect("get").as_deref(),
        Some("from b"),
        "namespaces must not collide"
    );

    let raw = store.get(&a.key("k")).await.expect("get").map(|v| v.value);
    assert_eq!(
        raw,
        Some(json("\"from a\"")),
        "State must store `k` under its full key `{}`",
        a.key("k")
    );

    assert!(b.delete("k").await.expect("delete"));
    assert_eq!(
        a.get::<String>("k").await.expect("get").as_deref(),
        Some("from a"),
        "a delete must stay in its namespace"
    );
}

async fn failed_update_writes_nothing(store: &Arc<dyn StateStore>, namespace: &str) {
    let state = State::new(store.clone(), namespace);
    let refuse =
        |_: Option<u64>| -> Result<u64, Error> { Err(Error::conflict("not enough stock")) };

    let err = state
        .update("new", refuse)
        .await
        .expect_err("an update whose closure fails must fail");
    assert_eq!(
        err.kind(),
        ErrorKind::Conflict,
        "update must return the closure's error: {err}"
    );
    assert_eq!(
        state.get::<u64>("new").await.expect("get"),
        None,
        "a failed update must not create the key"
    );

    let version = state.put("existing", &7u64).await.expect("put");
    let err = state
        .update("existing", refuse)
        .await
        .expect_err("an update whose closure fails must fail");
    assert_eq!(
        err.message(),
        "not enough stock",
        "update must return the closure's error unchanged"
    );
    let after = state.get_versioned::<u64>("existing").await.expect("get");
    assert_eq!(
        after.map(|v| (v.value, v.version)),
        Some((7, version)),
        "a failed update must leave the value and its version alone"
    );
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        if let Err(e) = task.await {
            match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("a suite task did not finish: {e}"),
            }
        }
    }
}

fn json(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn versioned(text: &str, version: u64) -> crate::state::Versioned<Bytes> {
    crate::state::Versioned {
        value: json(text),
        version,
    }
}
