//! Real `nats-server` and `redis-server` processes, one per test.
//!
//! Each server gets a free port and its own temporary directory, is probed until it answers (never
//! a fixed sleep), can be stopped and restarted on the same port to simulate an outage, and is
//! killed and cleaned up when dropped. A missing binary fails the test with a message saying how to
//! install it: a test that silently skips would pass on a machine that tests nothing.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::process::{Binary, NotReady, Process, read_from};

/// How often a server is started on another port when the free one it chose was taken.
pub(super) const PORT_ATTEMPTS: u32 = 5;
pub(super) const NATS: Binary = Binary {
    name: "nats-server",
    env: "NATS_SERVER_BIN",
    install: "install it with `apt-get install nats-server` (Debian) or from \
              https://github.com/nats-io/nats-server/releases",
};

pub(super) const REDIS: Binary = Binary {
    name: "redis-server",
    env: "REDIS_SERVER_BIN",
    install: "install it with `apt-get install redis-server` (Debian) or from \
              https://redis.io/downloads",
};

/// A real `nats-server -js` on a free port of 127.0.0.1, with its own JetStream store directory.
///
/// ```no_run
/// # async fn demo() {
/// let mut nats = cohort::testing::NatsServer::start().await;
/// let client = async_nats::connect(nats.url()).await.expect("connect");
/// nats.stop().await; // an outage
/// nats.restart().await; // same port, same streams
/// # drop(client);
/// # }
/// ```
#[derive(Debug)]
pub struct NatsServer {
    process: Process,
    port: u16,
    /// The configuration file and the monitoring port of a server started
    /// [with a configuration](Self::start_with).
    configured: Option<Configured>,
}

/// A server started with a configuration of the test's own: it may refuse the harness's clients
/// (authentication, TLS), so its readiness is asked on the monitoring port instead.
#[derive(Debug)]
struct Configured {
    file: PathBuf,
    monitor_port: u16,
}

impl NatsServer {
    /// Starts `nats-server` with JetStream on a random port (set `NATS_SERVER_BIN` to use another
    /// binary) and returns once it accepts clients and JetStream answers.
    ///
    /// # Panics
    ///
    /// When the binary is missing or the server does not become ready; the message includes the
    /// server's output.
    pub async fn start() -> Self {
        let mut process = Process::new(&NATS);
        let ports_dir = ports_dir(&process);
        let mut args = nats_args(&process, "-1", None);
        args.extend(["--ports_file_dir".into(), ports_dir.clone().into()]);
        process.spawn(&args).await;
        let port = match process
            .wait_for(|| std::future::ready(ports_file(&ports_dir, "nats")))
            .await
        {
            Ok(port) => port,
            Err(e) => process.fail("writing its ports file", e),
        };
        wait_for_nats(&mut process, port).await;
        NatsServer {
            process,
            port,
            configured: None,
        }
    }

    /// Like [`start`](Self::start), with `config` as the server's configuration file: what a test
    /// needs the server to require, such as `authorization { token: "s3cret" }` or a
    /// `tls { cert_file: ..., key_file: ..., ca_file: ..., verify: true }` block. The harness
    /// still sets the address, port and store directory, and waits for JetStream through the
    /// monitoring endpoint (`/healthz`), since the server may refuse a client without credentials.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start), and when nats-server rejects `config` (its output says why).
    pub async fn start_with(config: &str) -> Self {
        let mut process = Process::new(&NATS);
        let file = process.dir.path().join("server.conf");
        if let Err(e) = fs::write(&file, config) {
            panic!("cannot write {}: {e}", file.display());
        }
        let ports_dir = ports_dir(&process);
        let mut args = nats_args(&process, "-1", Some(&file));
        args.extend(["-m", "-1", "--ports_file_dir"].map(OsString::from));
        args.push(ports_dir.clone().into());
        process.spawn(&args).await;
        let ports = || {
            std::future::ready(
                ports_file(&ports_dir, "nats").zip(ports_file(&ports_dir, "monitoring")),
            )
        };
        let (port, monitor_port) = match process.wait_for(ports).await {
            Ok(ports) => ports,
            Err(e) => process.fail("writing its ports file", e),
        };
        wait_for_healthz(&mut process, monitor_port).await;
        NatsServer {
            process,
            port,
            configured: Some(Configured { file, monitor_port }),
        }
    }

    /// The URL clients connect to: `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        loopback_url("nats", self.port)
    }

    /// The client port; it stays the same across [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (as a crash would) and waits until it is gone. Its store directory is kept
    /// for [`restart`](Self::restart). Does nothing when it is already stopped.
    pub async fn stop(&mut self) {
        self.process.stop().await;
    }

    /// Starts the server again on the same port with the same store directory (stopping it first
    /// if it runs) and returns once it is ready.
    ///
    /// # Panics
    ///
    /// When the server does not become ready, for example because another process took the port.
    pub async fn restart(&mut self) {
        let port = self.port.to_string();
        match &self.configured {
            None => {
                let args = nats_args(&self.process, &port, None);
                self.process.spawn(&args).await;
                wait_for_nats(&mut self.process, self.port).await;
            }
            Some(configured) => {
                let mut args = nats_args(&self.process, &port, Some(&configured.file));
                args.extend(["-m".into(), configured.monitor_port.to_string().into()]);
                let monitor_port = configured.monitor_port;
                self.process.spawn(&args).await;
                wait_for_healthz(&mut self.process, monitor_port).await;
            }
        }
    }

    /// Freezes the server with SIGSTOP: its connections stay open but nothing is answered, as
    /// with a server stuck in a long pause or behind a network that drops packets. Clients see
    /// no error, only silence, until [`thaw`](Self::thaw).
    ///
    /// # Panics
    ///
    /// When the server is not running.
    pub async fn freeze(&self) {
        self.process.signal("STOP").await;
    }

    /// Resumes a server frozen by [`freeze`](Self::freeze) with SIGCONT.
    ///
    /// # Panics
    ///
    /// When the server is not running.
    pub async fn thaw(&self) {
        self.process.signal("CONT").await;
    }
}

/// The arguments of every run; a configuration file comes first, so that they override it.
fn nats_args(process: &Process, port: &str, config: Option<&Path>) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    if let Some(config) = config {
        args.extend(["-c".into(), config.into()]);
    }
    args.extend(
        ["-js", "-a", "127.0.0.1", "-p", port, "-sd"]
            .into_iter()
            .map(OsString::from),
    );
    args.push(process.data_dir().into());
    args
}

fn ports_dir(process: &Process) -> PathBuf {
    let dir = process.dir.path().join("ports");
    if let Err(e) = fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    dir
}

/// The port of `listener` (`nats`, `monitoring`) that nats-server wrote to its ports file, once
/// the file is complete.
fn ports_file(ports_dir: &Path, listener: &str) -> Option<u16> {
    let file = fs::read_dir(ports_dir)
        .ok()?
        .filter_map(Result::ok)
        .find(|entry| entry.path().extension().is_some_and(|ext| ext == "ports"))?;
    let ports: serde_json::Value = serde_json::from_slice(&fs::read(file.path()).ok()?).ok()?;
    let url = ports.get(listener)?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// Waits until the monitoring endpoint on `monitor_port` reports the server, JetStream included,
/// healthy.
async fn wait_for_healthz(process: &mut Process, monitor_port: u16) {
    let healthy = || {
        greets(
            monitor_port,
            b"GET /healthz HTTP/1.0\r\n\r\n",
            b"HTTP/1.0 200",
        )
    };
    if let Err(e) = process.wait_for(healthy).await {
        process.fail("answering /healthz", e);
    }
}

/// Waits until the server at `port` greets clients and JetStream answers for the account: the
/// port opens before JetStream has recovered its streams.
async fn wait_for_nats(process: &mut Process, port: u16) {
    if let Err(e) = process.wait_for(|| greets(port, b"", b"INFO ")).await {
        process.fail("sending INFO", e);
    }
    let url = loopback_url("nats", port);
    let client = match process
        .wait_for(|| async { async_nats::connect(&url).await.ok() })
        .await
    {
        Ok(client) => client,
        Err(e) => process.fail("accepting a client", e),
    };
    // A raw request rather than `jetstream::Context::query_account`: async-nats cannot decode
    // the account info of nats-server 2.9, which Debian stable ships.
    let account_info = || async {
        let reply = client.request("$JS.API.INFO", Bytes::new()).await.ok()?;
        let info: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
        info.get("error").is_none().then_some(())
    };
    if let Err(e) = process.wait_for(account_info).await {
        process.fail("answering JetStream account info", e);
    }
}

/// A real `redis-server` on a free port of 127.0.0.1, in its own directory: without persistence,
/// or [durable](Self::start_durable) for tests whose data must outlive a restart.
///
/// ```no_run
/// # async fn demo() {
/// let mut redis = cohort::testing::RedisServer::start().await;
/// let store = cohort::state::RedisStore::connect(&redis.url()).await.expect("connect");
/// redis.stop().await; // the store now fails with ErrorKind::Unavailable
/// redis.restart().await; // and serves again
/// # drop(store);
/// # }
/// ```
#[derive(Debug)]
pub struct RedisServer {
    process: Process,
    port: u16,
    setup: RedisSetup,
}

/// How a [`RedisServer`] runs, the same on every restart.
#[derive(Debug, Clone, Default)]
struct RedisSetup {
    durable: bool,
    /// The test's own arguments (credentials, TLS files).
    extra: Vec<OsString>,
    /// Serves TLS only, on the port.
    tls: bool,
    /// In cluster mode, the port of its cluster bus: chosen anew with the port on each attempt
    /// to start, since either may be taken, then kept across restarts.
    cluster_bus: Option<u16>,
}

impl RedisSetup {
    /// Whether the harness can PING the server itself: not when it wants credentials or TLS.
    fn is_plain(&self) -> bool {
        self.extra.is_empty() && !self.tls
    }
}

impl RedisServer {
    /// Starts `redis-server` on a free port (set `REDIS_SERVER_BIN` to use another binary) and
    /// returns once it answers `PING`.
    ///
    /// # Panics
    ///
    /// When the binary is missing or the server does not become ready; the message includes the
    /// server's output.
    pub async fn start() -> Self {
        Self::start_set_up(RedisSetup::default()).await
    }

    /// Like [`start`](Self::start), with `args` added to the command line: what a test needs
    /// the server to require, such as `["--requirepass", "s3cret"]` or an ACL user
    /// (`["--user", "alice", "on", ">s3cret", "~*", "+@all", "--user", "default", "off"]`).
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start), and when redis-server rejects `args` (its output says why).
    pub async fn start_with(args: &[&str]) -> Self {
        Self::start_set_up(RedisSetup {
            extra: args.iter().map(OsString::from).collect(),
            ..RedisSetup::default()
        })
        .await
    }

    /// Like [`start_with`](Self::start_with), serving TLS only on its port (`--tls-port`,
    /// `--port 0`); `args` name the files (`--tls-cert-file`, `--tls-key-file`,
    /// `--tls-ca-cert-file`) and whether clients need certificates
    /// (`--tls-auth-clients yes|no`). Its [`url`](Self::url) is `rediss://`.
    ///
    /// # Panics
    ///
    /// As [`start_with`](Self::start_with).
    pub async fn start_tls(args: &[&str]) -> Self {
        Self::start_set_up(RedisSetup {
            extra: args.iter().map(OsString::from).collect(),
            tls: true,
            ..RedisSetup::default()
        })
        .await
    }

    /// Like [`start_with`](Self::start_with), in cluster mode (`args` enable it): its cluster bus
    /// on a free port of its own, [`cluster_bus`](Self::cluster_bus).
    pub(super) async fn start_cluster_node(args: &[&str]) -> Self {
        Self::start_set_up(RedisSetup {
            extra: args.iter().map(OsString::from).collect(),
            // A placeholder: `start_set_up` picks the port with the server's.
            cluster_bus: Some(0),
            ..RedisSetup::default()
        })
        .await
    }

    /// Like [`start`](Self::start), with an append-only file synced before each reply leaves the
    /// server, so whatever a client was told is stored survives [`stop`](Self::stop),
    /// [`terminate`](Self::terminate) and [`restart`](Self::restart).
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub async fn start_durable() -> Self {
        Self::start_set_up(RedisSetup {
            durable: true,
            ..RedisSetup::default()
        })
        .await
    }

    async fn start_set_up(mut setup: RedisSetup) -> Self {
        let mut process = Process::new(&REDIS);
        let port = on_free_port(&mut process, "answering PING", async |process, port| {
            if setup.cluster_bus.is_some() {
                setup.cluster_bus = Some(free_port());
            }
            start_redis(process, port, &setup).await
        })
        .await;
        RedisServer {
            process,
            port,
            setup,
        }
    }

    /// The URL clients connect to: `redis://127.0.0.1:PORT` (`rediss://` when it serves TLS).
    pub fn url(&self) -> String {
        loopback_url(if self.setup.tls { "rediss" } else { "redis" }, self.port)
    }

    /// The port; it stays the same across [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of its cluster bus, when it is a cluster node; the same across restarts.
    pub(super) fn cluster_bus(&self) -> Option<u16> {
        self.setup.cluster_bus
    }

    /// Whether the server runs: started, and not stopped since.
    pub(super) fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// Kills the server (as a crash would) and waits until it is gone. Its directory is kept, but
    /// unless the server is [durable](Self::start_durable), a restart begins empty. Does nothing
    /// when it is already stopped.
    pub async fn stop(&mut self) {
        self.process.stop().await;
    }

    /// Stops the server gracefully with SIGTERM, as an orchestrator would, and waits until it has
    /// closed its connections and exited. Does nothing when it is already stopped.
    ///
    /// # Panics
    ///
    /// When the server does not exit within 30 s, for example because it is frozen.
    pub async fn terminate(&mut self) {
        self.process.terminate().await;
    }

    /// Freezes the server with SIGSTOP: its connections stay open but nothing is answered, as
    /// with a server stuck in a long pause or behind a network that drops packets. Clients see
    /// no error, only silence, until [`thaw`](Self::thaw); then it runs what it received.
    ///
    /// # Panics
    ///
    /// When the server is not running.
    pub async fn freeze(&self) {
        self.process.signal("STOP").await;
    }

    /// Resumes a server frozen by [`freeze`](Self::freeze) with SIGCONT.
    ///
    /// # Panics
    ///
    /// When the server is not running.
    pub async fn thaw(&self) {
        self.process.signal("CONT").await;
    }

    /// Starts the server again on the same port (stopping it first if it runs) and returns once
    /// it answers `PING`.
    ///
    /// # Panics
    ///
    /// When the server does not become ready, for example because another process took the port.
    pub async fn restart(&mut self) {
        if let Err(e) = start_redis(&mut self.process, self.port, &self.setup).await {
            self.process.fail("answering PING", e);
        }
    }
}

/// Spawns redis-server on `port` and waits until it is ready (a durable one has loaded its
/// append-only file by then). Its own log must say so too: a PING alone could be answered by
/// another server that won the port. One that wants credentials or TLS is ready when its log
/// says so and the port accepts a connection.
async fn start_redis(process: &mut Process, port: u16, setup: &RedisSetup) -> Result<(), NotReady> {
    let port_arg = port.to_string();
    let listen: &[&str] = if setup.tls {
        &["--port", "0", "--tls-port", &port_arg]
    } else {
        &["--port", &port_arg]
    };
    let mut args: Vec<OsString> = listen
        .iter()
        .chain(&[
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            if setup.durable { "yes" } else { "no" },
            // Written and synced before the replies of each round leave: nothing acknowledged is lost.
            "--appendfsync",
            "always",
            "--dir",
        ])
        .map(OsString::from)
        .collect();
    args.push(process.data_dir().into());
    if let Some(bus) = setup.cluster_bus {
        args.extend(["--cluster-port".into(), bus.to_string().into()]);
    }
    args.extend(setup.extra.iter().cloned());
    let log_start = process.spawn(&args).await;
    let log = process.log_path();
    let plain = setup.is_plain();
    process
        .wait_for(|| {
            let log = log.clone();
            async move {
                if !read_from(&log, log_start).contains("Ready to accept connections") {
                    return None;
                }
                if plain {
                    greets(port, b"PING\r\n", b"+PONG").await
                } else {
                    TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
                }
            }
        })
        .await
}

/// The URL of a server listening on `port` of 127.0.0.1.
pub(super) fn loopback_url(scheme: &str, port: u16) -> String {
    format!("{scheme}://127.0.0.1:{port}")
}

/// Starts `process` with `start` on a free port, and returns the port. Another process can take
/// a port between the probe and the server's bind: then it tries again on another, up to
/// [`PORT_ATTEMPTS`] times.
///
/// # Panics
///
/// When the server does not become ready, with `step` and its output.
pub(super) async fn on_free_port(
    process: &mut Process,
    step: &str,
    mut start: impl AsyncFnMut(&mut Process, u16) -> Result<(), NotReady>,
) -> u16 {
    let mut attempt = 1;
    loop {
        let port = free_port();
        let log_start = process.log_len();
        match start(process, port).await {
            Ok(()) => return port,
            Err(NotReady::Exited(_))
                if attempt < PORT_ATTEMPTS
                    && process
                        .log_since(log_start)
                        .contains("Address already in use") =>
            {
                attempt += 1;
            }
            Err(e) => process.fail(step, e),
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub(super) fn free_port() -> u16 {
    match TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()) {
        Ok(addr) => addr.port(),
        Err(e) => panic!("cannot find a free port on 127.0.0.1: {e}"),
    }
}

/// `Some` when a server on `port` answers `request` with a reply that starts with `reply`.
pub(super) async fn greets(port: u16, request: &[u8], reply: &[u8]) -> Option<()> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        if !request.is_empty() {
            stream.write_all(request).await?;
        }
        let mut received = vec![0; reply.len()];
        stream.read_exact(&mut received).await?;
        io::Result::Ok(received == reply)
    };
    matches!(
        timeout(Duration::from_secs(1), exchange).await,
        Ok(Ok(true))
    )
    .then_some(())
}
