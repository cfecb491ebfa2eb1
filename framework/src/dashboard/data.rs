//! What `/_cohort/data` answers, gathered when it is asked: every instance's commands (from the
//! broker, or this instance's own counts), this instance's subscriptions' backlogs, and its
//! recent commands. What cannot be gathered is named in `problems`; the rest is still answered.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use tokio::time::timeout;

use super::recent::RecentCommand;
use super::{Source, lock};
use crate::broker::spi::{CommandStats, Counts, SubscriptionStats};
use crate::error::Error;
use crate::message::unix_millis;
use crate::metrics::outcome_of_task;
use crate::task::{TaskOutcome, TaskStatus, run_here};

/// How long `/_cohort/data` waits for the instances' `$SRV.STATS` answers.
pub(crate) const GATHER_WINDOW: Duration = Duration::from_millis(300);

/// How long `/_cohort/data` waits for a subscription's backlog: the page must not hang on a
/// broker that does not answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/_cohort/data` answers.
#[derive(Debug, Serialize)]
pub(super) struct Data {
    /// The instance that answers.
    instance: String,
    /// Every instance that reported, this one included, sorted.
    instances: Vec<String>,
    commands: Vec<CommandRow>,
    subscriptions: Vec<SubscriptionRow>,
    /// The tasks this instance runs, as it sees them: each tick runs on one instance only.
    tasks: Vec<TaskRow>,
    recent: Vec<RecentCommand>,
    /// What the last version drift check found, one line each.
    drift: Vec<String>,
    /// What could not be gathered, with its cause: the dashboard is for operators.
    problems: Vec<String>,
}

/// One command on one instance.
#[derive(Debug, Serialize)]
struct CommandRow {
    instance: String,
    /// `{service}.v{version}.{name}`, or the subject of a command this binary does not have.
    command: String,
    subject: String,
    #[serde(flatten)]
    counts: Counts,
}

/// One subscription consumed here.
#[derive(Debug, Serialize)]
struct SubscriptionRow {
    /// `{service}.{name}`
    subscription: String,
    event: &'static str,
    #[serde(flatten)]
    stats: Option<SubscriptionStats>,
    error: Option<String>,
}

/// One task of a service this instance runs.
#[derive(Debug, PartialEq, Serialize)]
struct TaskRow {
    /// `{service}.{name}`
    task: String,
    /// `every 1m`, `cron 0 3 * * *` or `on start`.
    schedule: String,
    /// The next tick this instance tries, in milliseconds since the Unix epoch.
    next_run: Option<u64>,
    /// When the last run on this instance started, in milliseconds since the Unix epoch.
    last_run: Option<u64>,
    /// `ok`, `error` or `lease_lost`, as the metrics label it.
    last_outcome: Option<&'static str>,
    /// The error of the last run, when it failed.
    last_error: Option<String>,
    /// The runs this instance made.
    runs: u64,
    running: bool,
}

impl From<TaskStatus> for TaskRow {
    fn from(status: TaskStatus) -> TaskRow {
        let last_error = match &status.last_outcome {
            Some(TaskOutcome::Failed(error)) => Some(error.clone()),
            _ => None,
        };
        TaskRow {
            task: format!("{}.{}", status.service, status.name),
            schedule: status.schedule.to_string(),
            next_run: status.next_run.map(unix_millis),
            last_run: status.last_run.map(unix_millis),
            last_outcome: status.last_outcome.as_ref().map(outcome_of_task),
            last_error,
            runs: status.runs,
            running: status.running,
        }
    }
}

/// The data, as of now.
pub(super) async fn gather(source: &Source) -> Data {
    let runtime = &source.runtime;
    let mut problems = Vec::new();
    let (commands, subscriptions) = tokio::join!(command_rows(source), subscription_rows(source));
    let commands = commands.unwrap_or_else(|err| {
        problems.push(err.to_string());
        Vec::new()
    });
    let mut instances: BTreeSet<String> = commands.iter().map(|c| c.instance.clone()).collect();
    instances.insert(runtime.instance_id.to_string());
    problems.extend(subscriptions.iter().filter_map(|s| s.error.clone()));
    Data {
        instance: runtime.instance_id.to_string(),
        instances: instances.into_iter().collect(),
        commands,
        subscriptions,
        tasks: run_here(runtime).into_iter().map(TaskRow::from).collect(),
        recent: source.dashboard.recent.newest_first(),
        drift: runtime
            .drift
            .findings()
            .iter()
            .map(ToString::to_string)
            .collect(),
        problems,
    }
}

/// Every instance's commands: from the broker, or from this instance's own counts.
async fn command_rows(source: &Source) -> Result<Vec<CommandRow>, Error> {
    let runtime = &source.runtime;
    let stats = match &source.dashboard.local {
        Some(local) => lock(local)
            .iter()
            .map(|(subject, stats)| {
                CommandStats::new(&runtime.instance_id, subject, stats.snapshot())
            })
            .collect(),
        None => runtime.broker.command_stats(GATHER_WINDOW).await?,
    };
    let mut rows: Vec<CommandRow> = stats
        .into_iter()
        .map(|s| CommandRow {
            command: match source.names.get(&s.subject) {
                Some(c) => format!("{}.v{}.{}", c.service, c.version, c.name),
                None => s.subject.clone(),
            },
            instance: s.instance,
            subject: s.subject,
            counts: s.counts,
        })
        .collect();
    rows.sort_by(|a, b| (&a.command, &a.instance).cmp(&(&b.command, &b.instance)));
    Ok(rows)
}

/// The backlog of each subscription this instance consumes, asked for all at once.
async fn subscription_rows(source: &Source) -> Vec<SubscriptionRow> {
    let broker = &source.runtime.broker;
    let asked = source
        .subscriptions
        .iter()
        .map(|(descriptor, spec)| async move {
            let (stats, error) =
                match timeout(LOOKUP_TIMEOUT, broker.subscription_stats(spec)).await {
                    Ok(Ok(stats)) => (stats, None),
                    Ok(Err(err)) => (None, Some(err.to_string())),
                    Err(_) => {
                        let late = format!(
                            "the backlog of `{}` did not come within {LOOKUP_TIMEOUT:?}",
                            spec.durable
                        );
                        (None, Some(late))
                    }
                };
            SubscriptionRow {
                subscription: format!("{}.{}", descriptor.service, descriptor.name),
                event: descriptor.event,
                stats,
                error,
            }
        });
    let mut rows = join_all(asked).await;
    // The registry's order is the linker's: sorted, the page keeps its rows in place.
    rows.sort_by(|a, b| a.subscription.cmp(&b.subscription));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_row_flattens_its_counts() {
        let row = SubscriptionRow {
            subscription: "audit.count".to_owned(),
            event: "order_placed",
            stats: Some(SubscriptionStats {
                dead_letters: 2,
                ..Default::default()
            }),
            error: None,
        };
        let json = serde_json::to_value(&row).expect("JSON");
        assert_eq!(json["dead_letters"], 2);
        assert_eq!(json["pending"], 0);
    }

    #[test]
    fn a_task_row_has_its_times_in_unix_millis_and_the_error_of_its_last_run() {
        let at = |ms| std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let status = TaskStatus {
            service: "audit",
            name: "sweep",
            schedule: crate::registry::TaskSchedule::Every { ms: 60_000 },
            next_run: Some(at(120_000)),
            last_run: Some(at(60_000)),
            last_outcome: Some(TaskOutcome::Failed("the ledger is locked".to_owned())),
            running: false,
            runs: 3,
        };
        let row = TaskRow {
            task: "audit.sweep".to_owned(),
            schedule: "every 1m".to_owned(),
            next_run: Some(120_000),
            last_run: Some(60_000),
            last_outcome: Some("error"),
            last_error: Some("the ledger is locked".to_owned()),
            runs: 3,
            running: false,
        };
        assert_eq!(TaskRow::from(status), row);
    }
}
