//! The HTTP server: an accept loop on hyper's HTTP/1 connections, with the limits that keep slow
//! and greedy clients from holding an instance (timeouts, a connection cap, head sizes), and a
//! graceful shutdown that lets the requests in flight finish.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use super::deadlines::{Activity, Deadlines, ReadTimeouts};
use crate::config::Config;
use crate::error::Error;
use crate::message::PROBLEM_JSON;

/// hyper's smallest read buffer: a head limit below it is checked once the head is parsed.
const MIN_BUF_SIZE: usize = 8192;
/// hyper's default number of header fields, which it keeps on the stack (more cost a heap
/// allocation per request).
const DEFAULT_MAX_HEADERS: usize = 100;
/// Connections over the limit being answered at once; past these, new ones are closed unanswered
/// so that refusing costs a bounded number of file descriptors too.
const REFUSING_AT_ONCE: usize = 64;
/// How long a refused connection may take to receive its 503.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// The longest wait before accepting again after the system refused (out of file descriptors).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The limits of the HTTP server, from the `COHORT_HTTP_*` settings.
#[derive(Debug, Clone, Copy)]
struct Limits {
    timeouts: ReadTimeouts,
    max_connections: usize,
    max_header_bytes: usize,
    max_headers: usize,
}

impl Limits {
    /// The limits of `config`, refused when one is zero: it would serve no request at all.
    fn of(config: &Config) -> Result<Limits, Error> {
        let positive = [
            ("http_header_timeout", config.http_header_timeout.is_zero()),
            ("http_idle_timeout", config.http_idle_timeout.is_zero()),
            ("http_body_timeout", config.http_body_timeout.is_zero()),
            ("http_max_connections", config.http_max_connections == 0),
            ("http_max_header_bytes", config.http_max_header_bytes == 0),
            ("http_max_headers", config.http_max_headers == 0),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, zero)| *zero) {
            let variable = format!("COHORT_{}", field.to_ascii_uppercase());
            return Err(Error::bad_request(format!(
                "Config::{field} ({variable}) must be above zero"
            ))
            .with_code("invalid_config"));
        }
        Ok(Limits {
            timeouts: ReadTimeouts {
                header: config.http_header_timeout,
                idle: config.http_idle_timeout,
            },
            max_connections: config.http_max_connections,
            max_header_bytes: config.http_max_header_bytes,
            max_headers: config.http_max_headers,
        })
    }

    fn http1(&self) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder
            // The header and idle timeouts are the socket's (see `deadlines`): hyper's own runs
            // from the previous response, so it could not tell an idle client from a slow one.
            .header_read_timeout(None)
            .keep_alive(true)
            .max_buf_size(self.max_header_bytes.max(MIN_BUF_SIZE))
            .max_header_size(self.max_header_bytes);
        if self.max_headers != DEFAULT_MAX_HEADERS {
            builder.max_headers(self.max_headers);
        }
        builder
    }
}

/// A bound HTTP listener, not serving yet.
pub(crate) struct HttpServer {
    listener: TcpListener,
    limits: Limits,
    refusal: Bytes,
}

impl HttpServer {
    /// Binds `config.http_addr`'s `addr`; an address in use or not allowed names the setting.
    pub(crate) async fn bind(
        addr: SocketAddr,
        config: &Config,
        instance: &str,
    ) -> Result<HttpServer, Error> {
        let limits = Limits::of(config)?;
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            Error::unavailable(format!("cannot listen on {addr} (COHORT_HTTP_ADDR): {e}"))
        })?;
        Ok(HttpServer {
            listener,
            limits,
            refusal: refusal(instance),
        })
    }

    /// The bound address, with the real port when port 0 was asked for.
    pub(crate) fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener
            .local_addr()
            .map_err(|e| Error::unavailable(format!("cannot read the HTTP address: {e}")))
    }

    /// Serves `router` until `stop`, then stops accepting and lets the connections finish the
    /// requests in flight; the task ends when the last one has closed.
    pub(crate) fn spawn(
        self,
        router: Router,
        stop: CancellationToken,
    ) -> JoinHandle<io::Result<()>> {
        tokio::spawn(self.serve(router, stop))
    }

    async fn serve(self, router: Router, stop: CancellationToken) -> io::Result<()> {
        let HttpServer {
            listener,
            limits,
            refusal,
        } = self;
        let http1 = limits.http1();
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let refusing = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
        let connections = TaskTracker::new();
        let mut backoff = Duration::ZERO;
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    backoff = after_accept_error(&e, backoff, &stop).await;
                    continue;
                }
            };
            backoff = Duration::ZERO;
            match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let connection = Connection {
                        http1: http1.clone(),
                        router: router.clone(),
                        timeouts: limits.timeouts,
                        _slot: slot,
                    };
                    connections.spawn(connection.serve(stream, stop.clone()));
                }
                Err(_) => refuse(stream, &refusing, refusal.clone()),
            }
        }
        // Closing the listener refuses new connections while the open ones finish.
        drop(listener);
        connections.close();
        connections.wait().await;
        Ok(())
    }
}

/// One accepted connection and what it needs to serve its requests.
struct Connection {
    http1: http1::Builder,
    router: Router,
    timeouts: ReadTimeouts,
    /// Held while the connection is open: it counts towards the connection limit.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(self, stream: TcpStream, stop: CancellationToken) {
        // Small responses go out at once instead of waiting for an acknowledgement (Nagle).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let activity = Arc::new(Activity::default());
        let io = TokioIo::new(Deadlines::new(stream, activity.clone(), self.timeouts));
        let router = self.router;
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            let in_flight = activity.request_started();
            let response = router.clone().call(request);
            async move {
                let response = response.await;
                drop(in_flight);
                response
            }
        });
        let connection = self.http1.serve_connection(io, service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = stop.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = result {
            // A client that goes away or times out is routine, not an error of this instance.
            tracing::debug!(error = %e, "HTTP connection ended with an error");
        }
    }
}

/// The 503 a connection over the limit gets, written as raw bytes: it is sent without reading
/// the request, so that refusing costs next to nothing.
fn refusal(instance: &str) -> Bytes {
    let problem = Error::unavailable("this instance has too many open connections; retry shortly")
        .with_code("too_many_connections")
        .to_problem_json();
    let mut response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {PROBLEM_JSON}\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\
         x-cohort-instance: {instance}\r\n\r\n",
        problem.len()
    )
    .into_bytes();
    response.extend_from_slice(&problem);
    Bytes::from(response)
}

/// Answers a connection over the limit with the 503 and closes it, or closes it at once when
/// too many are being answered already.
fn refuse(mut stream: TcpStream, refusing: &Arc<Semaphore>, refusal: Bytes) {
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let answer = async {
            stream.write_all(&refusal).await?;
            stream.shutdown().await?;
            // Read what the client sent until it closes: closing a socket with unread data
            // resets the connection, and the client would lose the 503 it has not read yet.
            let mut sink = [0; 1024];
            while stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        };
        let _ = tokio::time::timeout(REFUSAL_TIME, answer).await;
    });
}

/// Waits after a failed accept and returns the next wait. A connection that failed before it
/// was accepted is routine; anything else (out of file descriptors, memory) would fail again at
/// once, so the loop backs off, doubling up to a second, instead of spinning.
async fn after_accept_error(
    error: &io::Error,
    backoff: Duration,
    stop: &CancellationToken,
) -> Duration {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return backoff;
    }
    let wait = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
    tracing::error!(error = %error, retry_in_ms = wait.as_millis() as u64, "cannot accept HTTP connections");
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = stop.cancelled() => {}
    }
    wait
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_set_in_code_name_the_setting() {
        let config = Config {
            http_max_connections: 0,
            ..Config::default()
        };
        let err = Limits::of(&config).expect_err("refused");
        assert!(
            err.message().contains("COHORT_HTTP_MAX_CONNECTIONS"),
            "{err}"
        );
    }

    #[test]
    fn the_refusal_is_a_complete_problem_response() {
        let refusal = refusal("a1");
        let text = std::str::from_utf8(&refusal).expect("ASCII");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(body.contains("too_many_connections"), "{body}");
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_instead_of_spinning() {
        let stop = CancellationToken::new();
        let emfile = io::Error::from_raw_os_error(24);
        let mut backoff = Duration::ZERO;
        let mut waits = Vec::new();
        for _ in 0..9 {
            backoff = after_accept_error(&emfile, backoff, &stop).await;
            waits.push(backoff.as_millis());
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        let after_reset = after_accept_error(&reset, Duration::ZERO, &stop).await;
        assert_eq!(after_reset, Duration::ZERO);
    }
}
