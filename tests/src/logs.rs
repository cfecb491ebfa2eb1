//! What an instance logs, captured for a test to read.

use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::util::SubscriberInitExt;

/// Everything logged on this thread (a `#[tokio::test]` runtime runs all its tasks there), at every
/// level, as text.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        cohort::testing::lock(&self.0).extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Captures this thread's logs until the guard is dropped.
    pub fn start() -> (CapturedLogs, tracing::dispatcher::DefaultGuard) {
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, subscriber.set_default())
    }

    /// Captures what every thread of this test binary logs at INFO and above, from the first call
    /// on. For a test whose neighbours log from the same places: a subscriber of one thread can
    /// miss those events while another thread has none.
    pub fn everywhere() -> CapturedLogs {
        static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = CapturedLogs::default();
            let writer = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            // Another global subscriber would be the binary's own choice: then nothing is captured.
            let _ = subscriber.try_init();
            logs
        })
        .clone()
    }

    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&cohort::testing::lock(&self.0)).into_owned()
    }
}
