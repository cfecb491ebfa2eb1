//! Version drift: each instance announces the hash of every command's schemas (the micro
//! endpoint metadata `cohort.schema`) and of every event's schema (the metadata `cohort.events`
//! of its micro service `CohortEvents`), and compares its own table with what the others
//! announce, at start and every [`PERIOD`]. The same command version served with other schemas, a
//! command of its table that no instance serves, or an event with another schema where one side
//! consumes it, is a finding: logged once as a WARN, counted in the metric `cohort_schema_drift`,
//! and listed by `/readyz` and the dashboard until it is gone.
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

pub(crate) use compare::{About, Finding};
use compare::{Known, compare, compare_events};
use hash::event_schema_hash;
pub(crate) use hash::schema_hash;

use crate::broker::spi::EventSchema;
use crate::registry::{CommandDescriptor, Registry};
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
    events: Vec<EventSchema>,
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
            check(&runtime, &known, &events).await;
        }
    };
    stop.run_until_cancelled(checks).await;
}

/// The events this instance announces: every event type of the binary that has a schema, once
/// per schema, each with the subscriptions of this instance that consume it.
pub(crate) fn event_table(runtime: &Runtime, registry: &Registry) -> Vec<EventSchema> {
    let types = (registry.events.iter()).map(|event| (event.name, event.schema, None));
    let consumed = (registry.subscriptions.iter())
        .filter(|s| runtime.config.runs_service(s.service))
        .map(|s| (s.event, s.event_schema, Some(s.metrics_name().to_string())));
    let mut table: Vec<EventSchema> = Vec::new();
    for (name, schema, subscription) in types.chain(consumed) {
        let Some(schema) = event_schema_hash(schema) else {
            continue;
        };
        let subject = runtime.subjects.event_filter(name);
        let listed = table
            .iter()
            .position(|e| e.subject == subject && e.schema == schema);
        let index = listed.unwrap_or_else(|| {
            table.push(EventSchema::new(&subject, &schema, &[]));
            table.len() - 1
        });
        table[index].subscriptions.extend(subscription);
    }
    table
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

async fn check(runtime: &Runtime, known: &[Known], events: &[EventSchema]) {
    let announced = match runtime.broker.announced(WINDOW).await {
        Ok(announced) => announced,
        Err(err) => {
            tracing::debug!(error = %err, "cannot compare the commands and events with the other instances'");
            return;
        }
    };
    let here = &runtime.instance_id;
    let mut findings = compare(known, here, &announced.commands);
    findings.extend(compare_events(events, here, &announced.events));
    tracing::debug!(
        instance = %here,
        announced = announced.commands.len() + announced.events.len(),
        findings = findings.len(),
        "compared the commands and events with the cluster's"
    );
    if let Some(metrics) = &runtime.metrics {
        metrics.show_drift(&findings);
    }
    let (new, gone) = runtime.drift.replace(findings);
    for finding in new {
        let (command, event) = labels(&finding);
        let (command, event) = (command.as_deref(), event.as_deref());
        tracing::warn!(command, event, kind = finding.kind(), "{finding}");
    }
    for finding in gone {
        let (command, event) = labels(&finding);
        let (command, event) = (command.as_deref(), event.as_deref());
        tracing::info!(command, event, kind = finding.kind(), "resolved: {finding}");
    }
}

/// The command or the event a finding is about, as the log's fields and the metric's labels name
/// them.
fn labels(finding: &Finding) -> (Option<String>, Option<String>) {
    match finding.about() {
        About::Command(command) => (Some(command.to_string()), None),
        About::Event(event) => (None, Some(event)),
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
