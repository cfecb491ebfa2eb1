//! Waiting for what other tasks, instances or servers do: poll a condition until a bound, never a
//! fixed sleep, and fail with a message that names what was awaited.

use std::fmt::Display;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::{Instant, sleep};

/// The pause between two checks.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Checks `done` every 20 ms until it holds.
///
/// ```no_run
/// # async fn demo() {
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use cohort::testing::{eventually, lock};
///
/// let seen = Arc::new(Mutex::new(Vec::<String>::new()));
/// // ... hand `seen` to a handler that records what it gets, then publish 20 events ...
/// eventually("the handler must get all 20 events", Duration::from_secs(10), async || {
///     lock(&seen).len() == 20
/// })
/// .await;
/// # }
/// ```
///
/// # Panics
///
/// With `what` once `within` has passed and `done` still does not hold.
pub async fn eventually(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    eventually_some(what, within, async || done().await.then_some(())).await;
}

/// Checks `found` every 20 ms until it returns something, and returns that.
///
/// # Panics
///
/// With `what` once `within` has passed and `found` still returns `None`.
pub async fn eventually_some<T>(
    what: &str,
    within: Duration,
    mut found: impl AsyncFnMut() -> Option<T>,
) -> T {
    let outcome = poll(within, async || found().await.ok_or(None::<String>)).await;
    outcome.unwrap_or_else(|_| panic!("{what} (waited {within:?})"))
}

/// Tries `attempt` every 20 ms until it succeeds, and returns its value.
///
/// # Panics
///
/// With `what` and the last error once `within` has passed and `attempt` still fails.
pub async fn eventually_ok<T, E: Display>(
    what: &str,
    within: Duration,
    mut attempt: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let outcome = poll(within, async || attempt().await.map_err(Some)).await;
    outcome.unwrap_or_else(|last| match last {
        Some(err) => panic!("{what}: {err} (retried for {within:?})"),
        None => panic!("{what} (waited {within:?})"),
    })
}

/// Calls `check` every [`POLL_INTERVAL`] until it succeeds or `within` passes; then the last
/// failure, if it said why.
async fn poll<T, E>(
    within: Duration,
    mut check: impl AsyncFnMut() -> Result<T, Option<E>>,
) -> Result<T, Option<E>> {
    let until = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= until => return Err(last),
            Err(_) => sleep(POLL_INTERVAL).await,
        }
    }
}

/// Locks `mutex`, even one poisoned by a panic elsewhere (a handler that panicked), so that what a
/// test recorded stays readable and the test fails on its own assertion, not on the poison.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eventually_returns_once_the_condition_holds() {
        let checks = AtomicUsize::new(0);
        eventually("the third check", Duration::from_secs(1), async || {
            checks.fetch_add(1, Ordering::SeqCst) == 2
        })
        .await;
        assert_eq!(checks.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "the sky must fall (waited 1s)")]
    async fn eventually_names_what_it_awaited() {
        eventually("the sky must fall", Duration::from_secs(1), async || false).await;
    }

    #[tokio::test(start_paused = true)]
    async fn eventually_some_returns_what_it_found() {
        let mut checks = 0;
        let found = eventually_some("a value", Duration::from_secs(1), async || {
            checks += 1;
            (checks == 2).then_some("found")
        })
        .await;
        assert_eq!((found, checks), ("found", 2));
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "a connection: refused (retried for 1s)")]
    async fn eventually_ok_names_the_last_error() {
        eventually_ok("a connection", Duration::from_secs(1), async || {
            Err::<(), _>("refused")
        })
        .await;
    }

    #[test]
    fn lock_reads_through_a_poisoned_mutex() {
        let mutex = Mutex::new(1);
        let _ = std::panic::catch_unwind(|| {
            let _guard = lock(&mutex);
            panic!("a handler panics while it holds the lock");
        });
        assert!(mutex.is_poisoned());
        assert_eq!(*lock(&mutex), 1);
    }
}
