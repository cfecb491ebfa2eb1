//! A started instance: what it serves, calls from outside any handler, and a shutdown that loses
//! no work.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::spi::Work;
use crate::context::Ctx;
use crate::contract::Command;
use crate::error::Error;
use crate::input::{Decode, Encode};
use crate::message::Metadata;
use crate::runtime::Runtime;

/// A started instance. Drop it to abandon it; call [`Running::shutdown`] to stop it gracefully.
pub struct Running {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) http_addr: Option<SocketAddr>,
    pub(crate) http_task: Option<JoinHandle<std::io::Result<()>>>,
    pub(crate) http_stop: CancellationToken,
    pub(crate) metrics_addr: Option<SocketAddr>,
    pub(crate) metrics_task: Option<JoinHandle<std::io::Result<()>>>,
    pub(crate) work: Work,
    pub(crate) router: axum::Router,
}

impl Running {
    /// The bound HTTP address (with the real port when port 0 was asked for).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address of the listener of its own that serves `/metrics` (`COHORT_METRICS_ADDR`),
    /// with the real port when port 0 was asked for; `None` when the metrics are on the HTTP
    /// listener, or off.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.runtime.instance_id
    }

    /// Calls a command from outside any handler (a test, a CLI, a scheduled job), with its types
    /// checked at compile time, on whichever instance serves it:
    /// `running.call::<place_order>(input).await?`.
    pub async fn call<C>(&self, input: C::Input) -> Result<C::Output, Error>
    where
        C: Command,
        C::Input: Encode,
        C::Output: Decode,
    {
        let caller = Metadata {
            traceparent: Some(crate::message::new_traceparent()),
            ..Metadata::default()
        };
        Ctx::new(self.runtime.clone(), C::SERVICE, caller)
            .call::<C>(input)
            .await
    }

    /// The tasks of the binary as this instance sees them: schedule, next tick, last run and its
    /// outcome here.
    pub fn tasks(&self) -> Vec<crate::task::TaskStatus> {
        self.runtime.tasks.snapshot()
    }

    /// The HTTP router, for driving the app in-process (`tower::ServiceExt::oneshot`).
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Stops taking new work and finishes what is in flight, within the grace period:
    /// first `/readyz` turns 503 and HTTP stops accepting while its requests complete (their
    /// commands still run here); then the broker stops handing this instance commands and events,
    /// and the handlers already running finish and acknowledge.
    pub async fn shutdown(self) -> Result<(), Error> {
        let deadline = Instant::now() + self.runtime.config.shutdown_grace;
        self.runtime.accepting.store(false, Ordering::Relaxed);
        if self.http_task.is_some() {
            tokio::time::sleep(self.runtime.config.shutdown_delay).await;
        }
        self.http_stop.cancel();
        for task in [self.http_task, self.metrics_task].into_iter().flatten() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::error!(error = %e, "HTTP server failed"),
                Ok(Err(e)) => tracing::error!(error = %e, "HTTP server task failed"),
                Err(_) => tracing::warn!("HTTP requests still running after the grace period"),
            }
        }
        self.work.stop.cancel();
        self.work.tasks.close();
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, self.work.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "commands or events still running after the grace period; abandoning them"
            );
        }
        self.runtime.broker.close().await?;
        tracing::info!(instance = %self.runtime.instance_id, "shut down");
        Ok(())
    }
}

/// Resolves on SIGTERM (what orchestrators send) or SIGINT (Ctrl-C).
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
