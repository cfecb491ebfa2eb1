//! One server process of the harness: started from its binary in a directory of its own, probed
//! until it answers, its log kept for failures, stopped and cleaned up.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

/// How long a server may take to answer after it was started. Generous, because tests run in
/// parallel on small CI machines; a healthy server answers within milliseconds.
pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause between two readiness probes.
pub(super) const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// How much of a server's output a failure shows.
const LOG_TAIL: usize = 8 * 1024;

/// A binary the harness runs, and what to tell a user who lacks it.
#[derive(Debug)]
pub(super) struct Binary {
    pub(super) name: &'static str,
    pub(super) env: &'static str,
    pub(super) install: &'static str,
}

/// Why a server did not become ready.
#[derive(Debug)]
pub(super) enum NotReady {
    Exited(ExitStatus),
    TimedOut,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Exited(status) => write!(f, "it exited with {status}"),
            NotReady::TimedOut => write!(f, "no answer within {READY_TIMEOUT:?}"),
        }
    }
}

/// One server process: its binary, its directory (data and log) and, while it runs, its child.
#[derive(Debug)]
pub(super) struct Process {
    binary: &'static Binary,
    /// Declared before `dir` so that the server is killed before its directory is removed.
    child: Option<Child>,
    pub(super) dir: TempDir,
}

impl Process {
    pub(super) fn new(binary: &'static Binary) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cohort-{}-", binary.name))
            .tempdir()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create a temporary directory for {}: {e}",
                    binary.name
                )
            });
        let data = dir.path().join("data");
        if let Err(e) = fs::create_dir_all(&data) {
            panic!("cannot create {}: {e}", data.display());
        }
        Process {
            binary,
            child: None,
            dir,
        }
    }

    pub(super) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Every run of the server appends its output here, so a failure after a restart still shows
    /// what happened before it.
    pub(super) fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub(super) fn log_len(&self) -> u64 {
        fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0)
    }

    pub(super) fn log_since(&self, offset: u64) -> String {
        read_from(&self.log_path(), offset)
    }

    /// Starts the binary with `args`, stopping the server first if it runs, so that a restart
    /// never leaves two. Returns where the new run's output begins in the log.
    pub(super) async fn spawn(&mut self, args: &[OsString]) -> u64 {
        self.stop().await;
        let log_start = self.log_len();
        self.child = Some(self.launch(args));
        log_start
    }

    /// Runs the binary with `args`, appending its output to the log.
    pub(super) fn launch(&self, args: &[OsString]) -> Child {
        let binary = self.binary;
        let (program, from_env) = match std::env::var_os(binary.env) {
            Some(path) => (path, true),
            None => (OsString::from(binary.name), false),
        };
        let log = self.open_log();
        let log_for_stderr = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot share {}: {e}", self.log_path().display()));
        let spawned = Command::new(&program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr)
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound && from_env => panic!(
                "{}={} does not exist; point {} at a {} binary or unset it to use the one on PATH",
                binary.env,
                program.to_string_lossy(),
                binary.env,
                binary.name,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
                "{} not found on PATH; {} (or set {} to its path)",
                binary.name, binary.install, binary.env,
            ),
            Err(e) => panic!("cannot start {}: {e}", program.to_string_lossy()),
        }
    }

    pub(super) fn open_log(&self) -> File {
        let path = self.log_path();
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
    }

    /// Polls `probe` until it yields a value, the server exits, or [`READY_TIMEOUT`] passes.
    pub(super) async fn wait_for<T, F, Fut>(&mut self, mut probe: F) -> Result<T, NotReady>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(value) = probe().await {
                return Ok(value);
            }
            if let Some(status) = self.exit_status() {
                return Err(NotReady::Exited(status));
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut);
            }
            sleep(PROBE_INTERVAL).await;
        }
    }

    pub(super) fn exit_status(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Whether the server was started and not stopped since.
    pub(super) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server, if it runs, and waits for it to exit.
    pub(super) async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error here means it already exited, which is what we want.
            let _ = child.kill().await;
        }
    }

    /// Asks the server to shut down with SIGTERM, if it runs, and waits for it to exit.
    pub(super) async fn terminate(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal("TERM").await;
        if let Some(mut child) = self.child.take()
            && timeout(READY_TIMEOUT, child.wait()).await.is_err()
        {
            let _ = child.kill().await;
            panic!(
                "{} did not exit within {READY_TIMEOUT:?} of SIGTERM",
                self.binary.name
            );
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`) to the running server with kill(1).
    pub(super) async fn signal(&self, signal: &str) {
        let name = self.binary.name;
        let Some(pid) = self.child.as_ref().and_then(Child::id) else {
            panic!("cannot send SIG{signal} to {name}: it is not running");
        };
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .await;
        match sent {
            Ok(status) if status.success() => {}
            Ok(status) => panic!("kill -{signal} {pid} ({name}) failed: {status}"),
            Err(e) => panic!("cannot run kill(1) to send SIG{signal} to {name}: {e}"),
        }
    }

    pub(super) fn fail(&self, step: &str, why: NotReady) -> ! {
        let log = self.log_since(0);
        let tail_start = log.len().saturating_sub(LOG_TAIL);
        let tail = log.get(tail_start..).unwrap_or(&log);
        panic!(
            "{} did not become ready ({step}): {why}. The end of its output:\n{tail}",
            self.binary.name
        )
    }
}

pub(super) fn read_from(path: &Path, offset: u64) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}
