//! The HTTP server's limits, tried as an attacker would with raw TCP clients: slow heads, stalled
//! bodies, idle keep-alive connections, too many connections, oversized heads. Each limit is set
//! small so that every test takes a second or two, and each asserts what the client sees and when.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cohort::testing::eventually_some;
use cohort_tests::start_embedded;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_TIMEOUT: Duration = Duration::from_millis(500);
const BODY_TIMEOUT: Duration = Duration::from_millis(500);
const IDLE_TIMEOUT: Duration = Duration::from_millis(1500);
const MAX_CONNECTIONS: usize = 3;
const MAX_HEADER_BYTES: usize = 8192;
const MAX_HEADERS: usize = 20;
/// How late a limit may act: scheduling on a loaded two-core machine, never a second.
const SLACK: Duration = Duration::from_millis(700);

/// One instance of the example app with every HTTP limit small.
async fn instance() -> (cohort::Running, SocketAddr) {
    let running = start_embedded(|config| {
        config.http_header_timeout = HEADER_TIMEOUT;
        config.http_body_timeout = BODY_TIMEOUT;
        config.http_idle_timeout = IDLE_TIMEOUT;
        config.http_max_connections = MAX_CONNECTIONS;
        config.http_max_header_bytes = MAX_HEADER_BYTES;
        config.http_max_headers = MAX_HEADERS;
    })
    .await;
    let addr = running.http_addr().expect("serves HTTP");
    (running, addr)
}

/// A response as a raw client reads it.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn problem_code(&self) -> Option<String> {
        let problem: Value = serde_json::from_str(&self.body).ok()?;
        problem["code"].as_str().map(str::to_owned)
    }
}

/// Reads one response (head, then `content-length` bytes of body); `None` when the connection
/// closes before a whole one came.
async fn read_response(stream: &mut TcpStream) -> Option<Raw> {
    let mut bytes = Vec::new();
    let mut chunk = [0; 4096];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let status = head.get(9..12)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&bytes[head_end..head_end + length]).into_owned();
    Some(Raw { status, head, body })
}

/// Sends `request` and reads its response, within a second.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Raw {
    stream.write_all(request).await.expect("sends the request");
    tokio::time::timeout(Duration::from_secs(1), read_response(stream))
        .await
        .expect("a response within a second")
        .expect("a whole response")
}

/// Whether the server has closed `stream`: it reads end of stream or a reset, no data.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0; 1];
    matches!(stream.read(&mut byte).await, Ok(0) | Err(_))
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n";

#[tokio::test]
async fn a_slowloris_head_is_closed_within_the_header_timeout() {
    let (running, addr) = instance().await;
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let began = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\nx-slow: ")
        .await
        .expect("sends the start of a head");
    // One byte every 100 ms: the head never ends, yet the client is never silent.
    let closed_at = loop {
        let mut byte = [0; 1];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break began.elapsed(),
            Ok(Ok(_)) => panic!("the server answered a head that never ended"),
            Err(_) => {}
        }
        if stream.write_all(b"a").await.is_err() {
            break began.elapsed();
        }
        assert!(
            began.elapsed() < HEADER_TIMEOUT + SLACK,
            "the slow head is still open after {:?}",
            began.elapsed()
        );
    };
    assert!(
        closed_at >= HEADER_TIMEOUT - Duration::from_millis(50),
        "closed before the header timeout: {closed_at:?}"
    );
    running.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_its_connection_closes() {
    let (running, addr) = instance().await;
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let began = Instant::now();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"text\":",
        )
        .await
        .expect("sends the head and part of the body");
    let response = tokio::time::timeout(BODY_TIMEOUT + SLACK, read_response(&mut stream))
        .await
        .expect("an answer within the body timeout")
        .expect("a whole response");
    let answered_at = began.elapsed();
    assert_eq!(response.status, 408, "{response:?}");
    assert_eq!(response.problem_code().as_deref(), Some("request_timeout"));
    assert!(
        response
            .head
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{}",
        response.head
    );
    assert!(
        answered_at >= BODY_TIMEOUT - Duration::from_millis(50),
        "answered before the body timeout: {answered_at:?}"
    );
    let closed = tokio::time::timeout(SLACK, closed_by_server(&mut stream)).await;
    assert_eq!(closed, Ok(true), "the connection closes after the 408");
    running.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn an_idle_connection_outlives_the_header_timeout_then_closes_after_the_idle_timeout() {
    let (running, addr) = instance().await;
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    assert_eq!(exchange(&mut stream, HEALTHZ).await.status, 200);
    // Idle for longer than a head may take: an idle client is not a slow one.
    tokio::time::sleep(HEADER_TIMEOUT + Duration::from_millis(300)).await;
    assert_eq!(exchange(&mut stream, HEALTHZ).await.status, 200);
    let idle_since = Instant::now();
    let closed = tokio::time::timeout(IDLE_TIMEOUT + SLACK, closed_by_server(&mut stream)).await;
    let closed_after = idle_since.elapsed();
    assert_eq!(closed, Ok(true), "the idle connection is closed");
    assert!(
        closed_after >= IDLE_TIMEOUT - Duration::from_millis(50),
        "closed before the idle timeout: {closed_after:?}"
    );
    running.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn connections_over_the_limit_get_503_until_one_closes() {
    let (running, addr) = instance().await;
    let mut open = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        assert_eq!(exchange(&mut stream, HEALTHZ).await.status, 200);
        open.push(stream);
    }
    let began = Instant::now();
    let mut over = TcpStream::connect(addr).await.expect("the kernel accepts");
    let refused = exchange(&mut over, HEALTHZ).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(
        refused.problem_code().as_deref(),
        Some("too_many_connections")
    );
    assert!(began.elapsed() < SLACK, "refused at once");
    let closed = tokio::time::timeout(SLACK, closed_by_server(&mut over)).await;
    assert_eq!(closed, Ok(true), "the refused connection is closed");

    drop(open.pop());
    let began = Instant::now();
    let served = eventually_some(
        "a new connection is served once one has closed",
        SLACK,
        async || {
            let mut stream = TcpStream::connect(addr).await.ok()?;
            let response = exchange(&mut stream, HEALTHZ).await;
            (response.status == 200).then_some(stream)
        },
    )
    .await;
    assert!(began.elapsed() < SLACK);
    drop(served);
    running.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn an_oversized_head_gets_431_from_hyper() {
    let (running, addr) = instance().await;
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nhost: test\r\nx-big: {}\r\n\r\n",
        "a".repeat(MAX_HEADER_BYTES)
    );
    let mut too_many = String::from("GET /healthz HTTP/1.1\r\nhost: test\r\n");
    for i in 0..MAX_HEADERS {
        too_many.push_str(&format!("x-{i}: {i}\r\n"));
    }
    too_many.push_str("\r\n");
    for request in [big_header, too_many] {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        let response = exchange(&mut stream, request.as_bytes()).await;
        assert_eq!(response.status, 431, "{response:?}");
        assert_eq!(response.body, "", "hyper answers with an empty body");
        let closed = tokio::time::timeout(SLACK, closed_by_server(&mut stream)).await;
        assert_eq!(closed, Ok(true), "the connection is closed after the 431");
    }
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let at_the_limit = format!(
        "GET /healthz HTTP/1.1\r\nhost: test\r\nx-big: {}\r\n\r\n",
        "a".repeat(MAX_HEADER_BYTES / 2)
    );
    assert_eq!(
        exchange(&mut stream, at_the_limit.as_bytes()).await.status,
        200
    );
    running.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn an_oversized_request_line_gets_431_from_hyper() {
    let (running, addr) = instance().await;
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let long_uri = format!(
        "GET /healthz?pad={} HTTP/1.1\r\nhost: test\r\n\r\n",
        "a".repeat(2 * MAX_HEADER_BYTES)
    );
    let began = Instant::now();
    let response = exchange(&mut stream, long_uri.as_bytes()).await;
    assert_eq!(response.status, 431, "{response:?}");
    assert!(began.elapsed() < SLACK, "answered at once");
    running.shutdown().await.expect("shuts down");
}
