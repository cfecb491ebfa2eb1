//! Time limits that cost nothing for work that never waits.
//!
//! Most commands finish on their first poll (no I/O). A `tokio::time::timeout` around them would
//! still read the clock and build a timer for every one; [`within`] does both only once the work
//! first waits.

use std::task::Poll;
use std::time::Duration;

use tokio::time::error::Elapsed;

/// Runs `future` until `limit()` from its first wait.
pub(crate) async fn within<F: Future>(
    limit: impl FnOnce() -> Duration,
    future: F,
) -> Result<F::Output, Elapsed> {
    let mut future = std::pin::pin!(future);
    match std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => tokio::time::timeout(limit(), future).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_never_waits_is_not_timed() {
        let limit_asked = std::cell::Cell::new(false);
        let limit = || {
            limit_asked.set(true);
            Duration::ZERO
        };
        assert_eq!(within(limit, async { 7 }).await, Ok(7));
        assert!(!limit_asked.get(), "no clock read for work done at once");
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_waits_is_cut_off_at_the_limit() {
        let slow = tokio::time::sleep(Duration::from_secs(10));
        let cut = within(|| Duration::from_secs(1), slow).await;
        assert!(cut.is_err(), "a wait past the limit ends in Elapsed");
        let quick = within(
            || Duration::from_secs(1),
            tokio::time::sleep(Duration::from_millis(10)),
        );
        assert_eq!(quick.await, Ok(()));
    }
}
