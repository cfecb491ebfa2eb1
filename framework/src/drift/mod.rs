//! Version drift: each instance announces the hash of every command's schemas (the micro
//! endpoint metadata `cohort.schema`), and compares its own table with what the others announce,
//! at start and every [`PERIOD`]. The same command version served with other schemas, or a command
//! of its table that no instance serves, is a finding: logged once as a WARN, counted in the
//! metric `cohort_schema_drift`, and listed by `/readyz` and the dashboard until it is gone.
//!
//! A finding is a warning, not a failure: during a rolling deploy that changes a command without
//! a new version, old and new instances disagree until the last old one stops, and taking them
//! out of the load balancer would only make it worse.

mod compare;
mod hash;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;

pub(crate) use compare::Finding;
use compare::{Known, compare};
pub(crate) use hash::schema_hash;

use crate::registry::CommandDescriptor;
use crate::runtime::Runtime;

/// The endpoint metadata key of a command's schema hash.
pub(crate) const SCHEMA_KEY: &str = "cohort.schema";

/// How often an instance compares its table with the cluster's.
const PERIOD: Duration = Duration::from_secs(30);

/// How long a check waits for the instances' `$SRV.INFO` answers: they answer at once.
const WINDOW: Duration = Duration::from_millis(500);

/// What the last check found; empty until one ran, and always with the embedded broker.
#[derive(Debug, Default)]
pub(crate) struct DriftBoard {
    findings: Mutex<Vec<Finding>>,
}

impl DriftBoard {
    /// The findings of the last check.
    pub(crate) fn findings(&self) -> Vec<Finding> {
        self.lock().clone()
    }

    /// Keeps `now`; returns the findings that are new since the last check, and those now gone.
    fn replace(&self, now: Vec<Finding>) -> (Vec<Finding>, Vec<Finding>) {
        let mut findings = self.lock();
        let new = now
            .iter()
            .filter(|f| !findings.contains(f))
            .cloned()
            .collect();
        let gone = findings
            .iter()
            .filter(|f| !now.contains(f))
            .cloned()
            .collect();
        *findings = now;
        (new, gone)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Finding>> {
        // One assignment changes the list: a panic cannot leave it half written.
        self.findings.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Compares this instance's table with the cluster's at once and every [`PERIOD`], until `stop`.
/// Nothing to do with a broker of one instance.
pub(crate) async fn watch(
    runtime: Arc<Runtime>,
    commands: Vec<&'static CommandDescriptor>,
    stop: CancellationToken,
) {
    if !runtime.broker.is_distributed() {
        return;
    }
    let known = table(&runtime, &commands);
    let mut ticks = interval(PERIOD);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // A check in its window must not hold up a shutdown.
    let checks = async {
        loop {
            ticks.tick().await;
            check(&runtime, &known).await;
        }
    };
    stop.run_until_cancelled(checks).await;
}

/// Every command of the binary: any of them can be called from here.
fn table(runtime: &Runtime, commands: &[&'static CommandDescriptor]) -> Vec<Known> {
    commands
        .iter()
        .map(|command| {
            let target = command.target(&runtime.subjects);
            Known {
                command: target.command_name(),
                subject: target.subject,
                schema: schema_hash(command),
                served_here: runtime.config.runs_service(command.service),
            }
        })
        .collect()
}

async fn check(runtime: &Runtime, known: &[Known]) {
    let announced = match runtime.broker.announced(WINDOW).await {
        Ok(announced) => announced,
        Err(err) => {
            tracing::debug!(error = %err, "cannot compare the commands with the other instances'");
            return;
        }
    };
    let findings = compare(known, &runtime.instance_id, &announced);
    tracing::debug!(
        instance = %runtime.instance_id,
        announced = announced.len(),
        findings = findings.len(),
        "compared the commands with the cluster's"
    );
    if let Some(metrics) = &runtime.metrics {
        metrics.show_drift(&findings);
    }
    let (new, gone) = runtime.drift.replace(findings);
    for finding in new {
        let command = finding.command();
        tracing::warn!(%command, kind = finding.kind(), "{finding}");
    }
    for finding in gone {
        let command = finding.command();
        tracing::info!(%command, kind = finding.kind(), "resolved: {finding}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::CommandName;

    fn missing(name: &'static str) -> Finding {
        let command = CommandName {
            service: "s",
            version: 1,
            name,
        };
        Finding::Missing {
            command,
            here: "i0".to_owned(),
        }
    }

    #[test]
    fn a_finding_is_new_once_and_gone_once() {
        let board = DriftBoard::default();
        assert_eq!(
            board.replace(vec![missing("a")]),
            (vec![missing("a")], vec![])
        );
        assert_eq!(
            board.replace(vec![missing("a"), missing("b")]),
            (vec![missing("b")], vec![])
        );
        assert_eq!(
            board.replace(vec![missing("b")]),
            (vec![], vec![missing("a")])
        );
        assert_eq!(board.findings(), [missing("b")]);
    }
}
