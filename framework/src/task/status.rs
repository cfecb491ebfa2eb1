//! What this instance knows of its tasks, for [`Running::tasks`](crate::Running::tasks): kept
//! broker-neutral so that a dashboard or metrics can read it.

use std::sync::Mutex;
use std::time::SystemTime;

use crate::registry::{TaskDescriptor, TaskSchedule};

/// How a run of a task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskOutcome {
    /// The function returned `Ok`.
    Succeeded,
    /// The function returned this error.
    Failed(String),
    /// The lease expired or was taken while the function ran, so it was stopped.
    LeaseLost,
}

/// One task as this instance sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskStatus {
    /// Its service.
    pub service: &'static str,
    /// Its name.
    pub name: &'static str,
    /// When it runs.
    pub schedule: TaskSchedule,
    /// The next tick this instance will try to run (`None` for `on_start` tasks, and for
    /// tasks of services this instance does not run).
    pub next_run: Option<SystemTime>,
    /// When the last run on this instance started.
    pub last_run: Option<SystemTime>,
    /// How the last run on this instance ended.
    pub last_outcome: Option<TaskOutcome>,
    /// Whether it runs on this instance right now.
    pub running: bool,
    /// How many runs this instance made.
    pub runs: u64,
}

impl TaskStatus {
    fn new(task: &TaskDescriptor) -> TaskStatus {
        TaskStatus {
            service: task.service,
            name: task.name,
            schedule: task.schedule,
            next_run: None,
            last_run: None,
            last_outcome: None,
            running: false,
            runs: 0,
        }
    }

    /// A finished run that started at `started`.
    pub(crate) fn record(&mut self, (started, outcome): (SystemTime, TaskOutcome)) {
        self.running = false;
        self.last_run = Some(started);
        self.last_outcome = Some(outcome);
        self.runs += 1;
    }
}

/// The status of every task of the binary. Written once a tick, never on a request's path.
#[derive(Debug, Default)]
pub(crate) struct TaskBoard {
    tasks: Mutex<Vec<TaskStatus>>,
}

impl TaskBoard {
    pub(crate) fn new(tasks: &[&'static TaskDescriptor]) -> TaskBoard {
        TaskBoard {
            tasks: Mutex::new(tasks.iter().map(|t| TaskStatus::new(t)).collect()),
        }
    }

    /// Changes the status of `task`.
    pub(crate) fn update(&self, task: &TaskDescriptor, change: impl FnOnce(&mut TaskStatus)) {
        // Plain data, never left half-written by a panic.
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(status) = tasks
            .iter_mut()
            .find(|s| s.service == task.service && s.name == task.name)
        {
            change(status);
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<TaskStatus> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
