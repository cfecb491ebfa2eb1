//! Real example-app processes, for tests that kill, freeze or restart an instance.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cohort::testing::eventually;
use tokio::process::{Child, Command};

/// The example-app binary, built once per test run.
pub fn example_app_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut build = std::process::Command::new(cargo);
            // Cargo gives this test binary the variables of the tests crate, and build scripts
            // (ring's) rerun when one changes: without them, the build finds everything fresh
            // instead of rebuilding dependencies, twice, once here and once in the next `cargo test`.
            for (name, _) in std::env::vars().filter(|(name, _)| set_by_cargo_for_a_crate(name)) {
                build.env_remove(name);
            }
            let status = build
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "example-app",
                    "--bin",
                    "example-app",
                ])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building example-app failed");
            // Tests run from target/<profile>/deps/; the binary sits in target/<profile>/.
            let exe = std::env::current_exe().expect("the test binary's path");
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("target/<profile>/deps");
            profile_dir.join("example-app")
        })
        .clone()
}

/// Whether `name` is one of the variables Cargo sets for the crate it compiles or tests.
fn set_by_cargo_for_a_crate(name: &str) -> bool {
    [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_TARGET_TMPDIR",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
        || name == "CARGO_PRIMARY_PACKAGE"
}

/// A free TCP port on loopback (the OS picks it; it is free again once we let go of it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// One example-app process (or one of another binary). Killed when dropped.
pub struct AppProcess {
    pub id: String,
    binary: PathBuf,
    pub http: Option<String>,
    port: Option<u16>,
    env: Vec<(String, String)>,
    child: Child,
    log: Log,
}

/// Everything a process wrote to stderr, kept for tests that read its log.
type Log = Arc<Mutex<String>>;

impl AppProcess {
    /// Starts example-app with `env` (on top of a clean `COHORT_*` environment) and waits until
    /// it is ready: `/readyz` answers 200, or, for a worker without HTTP, a moment after the
    /// ready log line.
    pub async fn start(id: &str, http: bool, env: &[(&str, String)]) -> AppProcess {
        Self::start_binary(example_app_binary(), id, http, env).await
    }

    /// Like [`AppProcess::start`], for another Cohort binary (a test's own, such as `task-app`).
    pub async fn start_binary(
        binary: PathBuf,
        id: &str,
        http: bool,
        env: &[(&str, String)],
    ) -> AppProcess {
        let port = http.then(free_port);
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect();
        let log = Log::default();
        let child = spawn(&binary, id, port, &env, log.clone()).await;
        AppProcess {
            id: id.to_owned(),
            binary,
            http: port.map(|port| format!("http://127.0.0.1:{port}")),
            port,
            env,
            child,
            log,
        }
    }

    /// Starts one instance serving HTTP per id in `ids`, all at once, and waits until all are ready.
    pub async fn start_all(ids: &[&str], env: &[(&str, String)]) -> Vec<AppProcess> {
        futures_util::future::join_all(ids.iter().map(|id| AppProcess::start(id, true, env))).await
    }

    /// The base URL of its HTTP server.
    pub fn url(&self) -> String {
        self.http
            .clone()
            .unwrap_or_else(|| panic!("{} serves no HTTP", self.id))
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("still running") as i32
    }

    /// Sends `signal` (e.g. "TERM", "KILL", "STOP", "CONT") with kill(1).
    pub async fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Kills the process with SIGKILL, as a crash would: no shutdown, nothing acknowledged or
    /// handed back. Returns once it is gone.
    pub async fn kill(&mut self) {
        self.signal("KILL").await;
        self.wait().await;
    }

    /// Starts the process again with the same id, HTTP port and environment (killing it first if
    /// it still runs), and waits until it is ready.
    pub async fn restart(&mut self) {
        // An error means it already exited, which is what we want.
        let _ = self.child.kill().await;
        self.child = spawn(
            &self.binary,
            &self.id,
            self.port,
            &self.env,
            self.log.clone(),
        )
        .await;
    }

    /// What the process has written to stderr so far (its log), over all its restarts.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn wait(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits within 30 s")
            .expect("wait works");
        status.code()
    }
}

/// Spawns `binary` as instance `id`, serving HTTP on `port` (or none), and waits until it is
/// ready.
async fn spawn(
    binary: &std::path::Path,
    id: &str,
    port: Option<u16>,
    env: &[(String, String)],
    log: Log,
) -> Child {
    let mut command = Command::new(binary);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("COHORT_")) {
        command.env_remove(name);
    }
    command
        .env("COHORT_INSTANCE_ID", id)
        .env(
            "COHORT_HTTP_ADDR",
            port.map_or_else(|| "off".to_owned(), |port| format!("127.0.0.1:{port}")),
        )
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("example-app starts");
    let stderr = child.stderr.take().expect("piped stderr");
    tokio::time::timeout(Duration::from_secs(30), wait_for_ready_line(stderr, log))
        .await
        .unwrap_or_else(|_| panic!("{id} did not get ready in 30 s"));
    if let Some(port) = port {
        wait_http_ready(&format!("http://127.0.0.1:{port}")).await;
    }
    child
}

/// Reads the log into `log` until "cohort instance ready", then keeps reading it so the process
/// never blocks on a full pipe.
async fn wait_for_ready_line(stderr: tokio::process::ChildStderr, log: Log) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut lines = BufReader::new(stderr).lines();
    let keep = move |line: &str| {
        let mut log = log.lock().expect("log lock");
        log.push_str(line);
        log.push('\n');
    };
    while let Ok(Some(line)) = lines.next_line().await {
        keep(&line);
        if line.contains("cohort instance ready") {
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    keep(&line);
                }
            });
            return;
        }
        if line.contains("Error") || line.contains("error") {
            eprintln!("example-app: {line}");
        }
    }
    panic!("example-app exited before it was ready");
}

async fn wait_http_ready(base: &str) {
    let client = reqwest::Client::new();
    let url = format!("{base}/readyz");
    let what = format!("{url} must answer 200");
    eventually(&what, Duration::from_secs(10), async || {
        let reply = client.get(&url).send().await;
        reply.is_ok_and(|reply| reply.status().is_success())
    })
    .await;
}
