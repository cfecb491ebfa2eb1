//! `#[task(on_start)]`: once per deployment version across the cluster, before any instance turns
//! ready. One instance takes the task's lease and runs it; the others wait for the key that says
//! it finished. A failure stops the instance that ran it (its start fails), which releases the
//! lease: a waiting instance then takes it and tries again, and so does the failed instance when
//! it is restarted.

use std::sync::Arc;
use std::time::Duration;

use super::lease::{Lease, LeaseLost};
use super::{Keys, name, now_millis, run_fenced};
use crate::error::Error;
use crate::registry::{TaskDescriptor, TaskSchedule};
use crate::runtime::Runtime;

/// The lease of an `on_start` task: how long a crashed or stalled runner delays the others at
/// most. Renewed while the task runs, however long it takes.
const START_LEASE: Duration = Duration::from_secs(10);
/// How often a waiting instance looks whether the task finished or its runner is gone.
const POLL: Duration = Duration::from_millis(100);

/// Runs, or waits for, every `on_start` task of the services this instance runs, in the order
/// of their names.
pub(crate) async fn run_on_start(
    runtime: &Arc<Runtime>,
    tasks: &[&'static TaskDescriptor],
) -> Result<(), Error> {
    let mut once: Vec<&'static TaskDescriptor> = tasks
        .iter()
        .copied()
        .filter(|t| t.schedule == TaskSchedule::OnStart && runtime.config.runs_service(t.service))
        .collect();
    once.sort_by_key(|t| (t.service, t.name));
    for task in once {
        run_once(runtime, task).await?;
    }
    Ok(())
}

async fn run_once(runtime: &Arc<Runtime>, task: &'static TaskDescriptor) -> Result<(), Error> {
    let version = runtime
        .config
        .deployment_version
        .as_deref()
        .unwrap_or(task.app_version);
    let keys = Keys::new(runtime, task);
    let done_key = format!("{}:start:{version}:done", keys.base);
    let lease_key = format!("{}:start:{version}:lease", keys.base);
    let store = &runtime.store;
    let mut waiting = false;
    loop {
        if store.get(&done_key).await?.is_some() {
            if waiting {
                tracing::info!(task = %name(task), version, "start-up task finished on another instance");
            }
            return Ok(());
        }
        let lease = Lease::acquire(
            store,
            &lease_key,
            &keys.fence(),
            &runtime.instance_id,
            0,
            START_LEASE,
        )
        .await?;
        if let Some(lease) = lease {
            return run_holding(runtime, task, lease, &done_key, version).await;
        }
        if !waiting {
            tracing::info!(task = %name(task), version, "waiting for the start-up task, which another instance runs");
            waiting = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn run_holding(
    runtime: &Arc<Runtime>,
    task: &'static TaskDescriptor,
    mut lease: Lease,
    done_key: &str,
    version: &str,
) -> Result<(), Error> {
    let store = &runtime.store;
    // Finished by another between our look and our lease.
    if store.get(done_key).await?.is_some() {
        lease.release().await;
        return Ok(());
    }
    tracing::info!(task = %name(task), version, token = lease.token, "running the start-up task");
    let started = super::start(runtime, task);
    let result = lease.hold(run_fenced(runtime, task, lease.token)).await;
    let outcome = match &result {
        Ok(Ok(())) => super::TaskOutcome::Succeeded,
        Ok(Err(e)) => super::TaskOutcome::Failed(e.to_string()),
        Err(LeaseLost) => super::TaskOutcome::LeaseLost,
    };
    super::record(runtime, task, started, outcome);
    let failed = match result {
        Ok(Ok(())) => {
            let proof = crate::state::encode(&serde_json::json!({
                "instance": &*runtime.instance_id,
                "finished_at": now_millis(),
            }))?;
            store.put(done_key, proof, None).await?;
            lease.release().await;
            tracing::info!(task = %name(task), version, "start-up task finished");
            return Ok(());
        }
        Ok(Err(e)) => e,
        Err(LeaseLost) => Error::unavailable(
            "its lease was lost (the store unreachable, or this process stalled, for a whole lease)",
        ),
    };
    lease.release().await;
    Err(Error::internal(format!(
        "the start-up task `{}` (version {version}) failed: {failed}; the instance does not start, \
         and the next instance to start runs the task again",
        name(task)
    ))
    .with_code("start_task_failed"))
}
