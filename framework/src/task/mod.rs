//! Tasks: `#[task]` functions that run on a schedule on exactly one instance of the cluster, or
//! once per deployment version before the instances turn ready.
//!
//! A periodic task's ticks fall on the wall clock ([`Timing`]), so every instance knows tick `T`
//! by the same number. At each tick every instance tries to take the task's [`Lease`]; the one
//! that does claims the tick in a permanent key holding the last tick claimed (so a tick runs at
//! most once, even for an instance whose clock is late), runs the function while renewing the
//! lease, and releases it. While a run goes on the lease stays taken, so an overrunning task skips
//! the ticks it overlaps instead of starting twice.

mod lease;
mod once;
mod status;
mod timing;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::context::Ctx;
use crate::error::Error;
use crate::message::{Metadata, new_traceparent, unix_millis};
use crate::metrics::QualifiedName;
use crate::registry::TaskDescriptor;
use crate::runtime::Runtime;
use lease::Lease;
pub(crate) use once::run_on_start;
pub(crate) use status::TaskBoard;
pub use status::{TaskOutcome, TaskStatus};
pub(crate) use timing::Timing;

tokio::task_local! {
    /// The fencing token of the run in progress: set around a task's future only, so that
    /// commands and events pay nothing for it.
    static FENCING_TOKEN: u64;
}

/// The fencing token of the task run this code is part of.
pub(crate) fn fencing_token() -> Option<u64> {
    FENCING_TOKEN.try_with(|token| *token).ok()
}

/// The function of `task` run in its context, with its fencing token.
fn run_fenced(
    runtime: &Arc<Runtime>,
    task: &TaskDescriptor,
    token: u64,
) -> impl Future<Output = Result<(), Error>> + use<> {
    FENCING_TOKEN.scope(token, (task.handler)(task_ctx(runtime, task)))
}

/// The longest lease of a periodic task: how long a stalled or crashed holder keeps it at most.
const MAX_LEASE: Duration = Duration::from_secs(30);

/// The lease of a tick: half the period, so that the lease of a holder that crashed has expired
/// by the next tick, and at most [`MAX_LEASE`].
fn lease_ttl(period: Duration) -> Duration {
    (period / 2).min(MAX_LEASE)
}

/// The keys of a task in the store, all in the namespace `{prefix:task:service.name}`.
pub(crate) struct Keys {
    base: Arc<str>,
}

impl Keys {
    pub(crate) fn new(runtime: &Runtime, task: &TaskDescriptor) -> Keys {
        Keys {
            base: runtime.namespace(&format!("task:{}.{}", task.service, task.name)),
        }
    }

    /// Who runs the task now.
    fn lease(&self) -> String {
        format!("{}:lease", self.base)
    }

    /// The counter of fencing tokens.
    fn fence(&self) -> String {
        format!("{}:fence", self.base)
    }

    /// The last tick claimed.
    fn tick(&self) -> String {
        format!("{}:tick", self.base)
    }
}

/// Starts a loop per periodic task of the services this instance runs; they stop at `stop`.
pub(crate) fn spawn_periodic(
    runtime: &Arc<Runtime>,
    tasks: &[&'static TaskDescriptor],
    tracker: &tokio_util::task::TaskTracker,
    stop: &CancellationToken,
) {
    for &task in tasks {
        // Checked by `Registry::collect`.
        let Ok(Some(timing)) = Timing::of(task.schedule) else {
            continue;
        };
        if !runtime.config.runs_service(task.service) {
            continue;
        }
        tracker.spawn(run_periodic(runtime.clone(), task, timing, stop.clone()));
    }
}

/// Waits for each tick and runs it if this instance gets it, until `stop`.
async fn run_periodic(
    runtime: Arc<Runtime>,
    task: &'static TaskDescriptor,
    timing: Timing,
    stop: CancellationToken,
) {
    let keys = Keys::new(&runtime, task);
    let mut after = now_millis();
    loop {
        let Some(tick) = timing.next_after(after) else {
            tracing::error!(task = %name(task), "the task's schedule has no next time; it stops");
            return;
        };
        runtime.tasks.update(task, |s| s.next_run = Some(at(tick)));
        tokio::select! {
            () = stop.cancelled() => return,
            () = sleep_until(tick) => {}
        }
        let period = timing.period_at(tick);
        if let Err(e) = run_tick(&runtime, task, &keys, tick, period).await {
            tracing::warn!(task = %name(task), error = %e, "cannot run the task's tick");
        }
        // The ticks that passed while this one ran, here or elsewhere, are skipped, not run late.
        after = tick.max(now_millis());
    }
}

/// Takes the lease and the tick, runs the function, releases the lease. A tick that another
/// instance holds, or that already ran, is skipped.
async fn run_tick(
    runtime: &Arc<Runtime>,
    task: &'static TaskDescriptor,
    keys: &Keys,
    tick: u64,
    period: Duration,
) -> Result<(), Error> {
    let store = &runtime.store;
    let lease_key = keys.lease();
    let Some(mut lease) = Lease::acquire(
        store,
        &lease_key,
        &keys.fence(),
        &runtime.instance_id,
        tick,
        lease_ttl(period),
    )
    .await?
    else {
        tracing::debug!(task = %name(task), tick, "another instance holds the task; tick skipped here");
        return Ok(());
    };
    if !claim_tick(runtime, &keys.tick(), tick).await? {
        lease.release().await;
        return Ok(());
    }
    let (started, outcome) = run(runtime, task, &mut lease, tick).await;
    lease.release().await;
    record(runtime, task, started, outcome);
    Ok(())
}

/// Records `tick` as the last one claimed, unless it or a later one already was.
async fn claim_tick(runtime: &Runtime, key: &str, tick: u64) -> Result<bool, Error> {
    let store = &runtime.store;
    let (last, version) = match store.get(key).await? {
        Some(last) => (
            crate::state::decode::<u64>(key, &last.value)?,
            Some(last.version),
        ),
        None => (0, None),
    };
    if last >= tick {
        return Ok(false);
    }
    let value = crate::state::encode(&tick)?;
    Ok(store
        .compare_and_swap(key, version, value, None)
        .await?
        .is_some())
}

/// When a run started, by the wall clock (to show) and the monotonic one (to time it).
struct Started {
    at: SystemTime,
    clock: Instant,
}

/// Marks `task` running from now.
fn start(runtime: &Runtime, task: &TaskDescriptor) -> Started {
    runtime.tasks.update(task, |s| s.running = true);
    Started {
        at: SystemTime::now(),
        clock: Instant::now(),
    }
}

/// Tells the task board and the metrics how a run of `task` ended.
fn record(runtime: &Runtime, task: &TaskDescriptor, started: Started, outcome: TaskOutcome) {
    if let Some(metrics) = &runtime.metrics {
        let name = QualifiedName {
            service: task.service,
            name: task.name,
        };
        metrics.task_ran(name, &outcome, started.clock.elapsed());
    }
    runtime
        .tasks
        .update(task, |s| s.record((started.at, outcome)));
}

/// The tasks of the services this instance runs, as it sees them, sorted by name: what its
/// metrics and dashboard show.
pub(crate) fn run_here(runtime: &Runtime) -> Vec<TaskStatus> {
    let mut tasks = runtime.tasks.snapshot();
    tasks.retain(|t| runtime.config.runs_service(t.service));
    tasks.sort_by_key(|t| (t.service, t.name));
    tasks
}

/// Runs the function under `lease` and says how it went.
async fn run(
    runtime: &Arc<Runtime>,
    task: &'static TaskDescriptor,
    lease: &mut Lease,
    tick: u64,
) -> (Started, TaskOutcome) {
    let started = start(runtime, task);
    let token = lease.token;
    tracing::debug!(task = %name(task), tick, token, "running the task");
    let outcome = match lease.hold(run_fenced(runtime, task, token)).await {
        Ok(Ok(())) => TaskOutcome::Succeeded,
        Ok(Err(e)) => {
            tracing::warn!(task = %name(task), tick, token, error = %e, "the task failed");
            TaskOutcome::Failed(e.to_string())
        }
        Err(lease::LeaseLost) => {
            tracing::error!(task = %name(task), tick, token, "the task's lease was lost (a stall, or the store unreachable for a whole lease); the run was stopped");
            TaskOutcome::LeaseLost
        }
    };
    (started, outcome)
}

/// The context a task runs in: its service's, with a trace of its own.
fn task_ctx(runtime: &Arc<Runtime>, task: &TaskDescriptor) -> Ctx {
    let meta = Metadata {
        traceparent: Some(new_traceparent()),
        ..Metadata::default()
    };
    Ctx::new(runtime.clone(), task.service, meta)
}

/// `service.name`, for messages.
pub(crate) fn name(task: &TaskDescriptor) -> String {
    format!("{}.{}", task.service, task.name)
}

fn now_millis() -> u64 {
    unix_millis(SystemTime::now())
}

fn at(millis: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(millis)
}

/// Sleeps until the wall clock reads `tick`; the monotonic timer may wake a little early.
async fn sleep_until(tick: u64) {
    loop {
        let now = now_millis();
        if now >= tick {
            return;
        }
        tokio::time::sleep(Duration::from_millis(tick - now)).await;
    }
}
