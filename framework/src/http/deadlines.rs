//! Read deadlines of one HTTP/1 connection between its requests: how long it may stay idle after
//! a response, and how long the head of its next request may take once it has begun.
//!
//! hyper has one timer for both (its header timeout runs from the end of the previous response),
//! which would make a short header timeout close every keep-alive connection too soon, or a long
//! idle timeout leave slowloris clients alone. So the socket is wrapped: while no request is in
//! flight its reads carry the deadline of the phase the connection is in; while one is, its body
//! has its own timeout ([`read_body`](super::request::read_body)) and reads carry none.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Whether a request of the connection is in flight, shared by its socket and its service.
#[derive(Default)]
pub(super) struct Activity {
    /// Starts plus ends of requests: odd while one is in flight, and changed by every request.
    transitions: AtomicUsize,
}

impl Activity {
    /// Marks a request in flight until the returned guard drops (when its response is ready).
    pub(super) fn request_started(self: &Arc<Self>) -> InFlight {
        self.transitions.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight; dropping it ends the request.
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.transitions.fetch_add(1, Ordering::Relaxed);
    }
}

/// The timeouts a connection's reads get between requests.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadTimeouts {
    /// From the first byte of a request head (or the connection's opening) to its end.
    pub(super) header: Duration,
    /// From the end of a response to the first byte of the next request.
    pub(super) idle: Duration,
}

/// Where a connection stands between two requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A response has just been handed over; the idle deadline starts at the next wait.
    AfterResponse,
    /// Waiting for the first byte of the next request.
    Idle,
    /// A request head has begun (or the connection is new) and is not complete.
    Head,
}

/// A socket whose reads time out as [`ReadTimeouts`] say while no request is in flight.
pub(super) struct Deadlines<IO> {
    io: IO,
    activity: Arc<Activity>,
    timeouts: ReadTimeouts,
    /// The value of `activity.transitions` last seen, to notice a request that came and went.
    seen: usize,
    phase: Phase,
    /// The deadline of the current phase; `None` until the phase first waits for the client,
    /// so a client that sends at once costs no clock reading.
    deadline: Option<Instant>,
    /// The timer behind the deadlines, made once per connection; it may fire before the
    /// deadline, which is then checked and the timer set again.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<IO> Deadlines<IO> {
    /// Wraps a fresh connection: its first request head must come within the header timeout.
    pub(super) fn new(io: IO, activity: Arc<Activity>, timeouts: ReadTimeouts) -> Self {
        Deadlines {
            io,
            activity,
            timeouts,
            seen: 0,
            phase: Phase::Head,
            deadline: None,
            sleep: None,
        }
    }

    /// Whether a request is in flight; notices the end of one, which starts a new wait.
    fn request_in_flight(&mut self) -> bool {
        let transitions = self.activity.transitions.load(Ordering::Relaxed);
        if transitions != self.seen {
            self.seen = transitions;
            self.enter(Phase::AfterResponse);
        }
        transitions % 2 == 1
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.deadline = None;
    }

    /// Called when part of a response went out: the idle wait starts (again) now. It is started
    /// here, not at the next read, because hyper does not read again after a response until the
    /// socket or a timer wakes it; a client that never reads its response is closed by it too.
    fn wrote(&mut self, cx: &mut Context<'_>) {
        if !self.request_in_flight() {
            self.enter(Phase::AfterResponse);
            // Just started, so it cannot have passed; polling it registers the wake-up.
            let _ = self.expired(cx);
        }
    }

    /// Called when a read has to wait: starts the phase's deadline if it is not running yet, and
    /// says whether it has passed.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = match self.deadline {
            Some(deadline) => deadline,
            None => self.start_deadline(),
        };
        let fresh = self.sleep.is_none();
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if deadline < sleep.deadline() {
            sleep.as_mut().reset(deadline);
        } else if !fresh && !sleep.is_elapsed() {
            // Polled since it was last set, so it wakes this connection when it fires. A later
            // deadline (the next idle wait, after every response) is checked then: moving the
            // timer on every request would cost more than the request's own work here.
            return false;
        }
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= deadline {
                return true;
            }
            sleep.as_mut().reset(deadline);
        }
    }

    fn start_deadline(&mut self) -> Instant {
        let timeout = match self.phase {
            Phase::AfterResponse | Phase::Idle => self.timeouts.idle,
            Phase::Head => self.timeouts.header,
        };
        if self.phase == Phase::AfterResponse {
            self.phase = Phase::Idle;
        }
        let deadline = Instant::now() + timeout;
        self.deadline = Some(deadline);
        deadline
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Deadlines<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.request_in_flight() {
            return read;
        }
        match read {
            Poll::Ready(Ok(())) if buf.filled().len() > before && this.phase != Phase::Head => {
                this.enter(Phase::Head);
            }
            Poll::Pending if this.expired(cx) => {
                return Poll::Ready(match this.phase {
                    // An idle client is simply done: end of stream closes the connection quietly.
                    Phase::AfterResponse | Phase::Idle => Ok(()),
                    Phase::Head => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request head did not arrive within the header timeout",
                    )),
                });
            }
            _ => {}
        }
        read
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Deadlines<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.wrote(cx);
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.wrote(cx);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    const HEADER: Duration = Duration::from_secs(1);
    const IDLE: Duration = Duration::from_secs(5);

    fn connection() -> (DuplexStream, Deadlines<DuplexStream>, Arc<Activity>) {
        let (client, server) = tokio::io::duplex(1024);
        let activity = Arc::new(Activity::default());
        let timeouts = ReadTimeouts {
            header: HEADER,
            idle: IDLE,
        };
        let server = Deadlines::new(server, activity.clone(), timeouts);
        (client, server, activity)
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_must_send_its_head_within_the_header_timeout() {
        let (_client, mut server, _) = connection();
        let began = Instant::now();
        let err = server.read(&mut [0; 64]).await.expect_err("times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(began.elapsed(), HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_after_a_response_then_the_next_head_has_the_header_timeout() {
        let (mut client, mut server, activity) = connection();
        let mut buf = [0; 64];
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("sent");
        assert!(server.read(&mut buf).await.expect("read") > 0);
        let in_flight = activity.request_started();
        let waiting = tokio::time::timeout(10 * IDLE, server.read(&mut buf)).await;
        assert!(waiting.is_err(), "no deadline while a request is in flight");
        drop(in_flight);
        server
            .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("written");
        // Idle for longer than a head may take, then part of a head, then a stall.
        tokio::time::sleep(3 * HEADER).await;
        client.write_all(b"GET").await.expect("sent");
        assert_eq!(server.read(&mut buf).await.expect("read"), 3);
        let began = Instant::now();
        let err = server.read(&mut buf).await.expect_err("times out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(began.elapsed(), HEADER);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_ends_at_the_idle_timeout() {
        let (_client, mut server, activity) = connection();
        drop(activity.request_started());
        server
            .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("written");
        let idle_since = Instant::now();
        let read = server.read(&mut [0; 64]).await.expect("a quiet end");
        assert_eq!(read, 0, "end of stream");
        assert_eq!(idle_since.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn each_response_starts_the_idle_wait_again() {
        let (mut client, mut server, activity) = connection();
        let mut buf = [0; 64];
        drop(activity.request_started());
        server
            .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("written");
        let waiting = tokio::time::timeout(IDLE / 2, server.read(&mut buf)).await;
        assert!(waiting.is_err(), "idle, not closed yet");
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("sent");
        assert!(server.read(&mut buf).await.expect("read") > 0);
        drop(activity.request_started());
        server
            .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("written");
        let idle_since = Instant::now();
        assert_eq!(server.read(&mut buf).await.expect("a quiet end"), 0);
        assert_eq!(
            idle_since.elapsed(),
            IDLE,
            "counted from the second response"
        );
    }
}
