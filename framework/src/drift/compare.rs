//! What an instance finds when it compares its table of commands and events with what the
//! others announce.

use std::fmt;

use crate::broker::spi::{Announced, AnnouncedEvent, EventSchema};
use crate::metrics::CommandName;

/// A command of this binary, as the drift check compares it.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) command: CommandName,
    /// `{prefix}.cmd.{service}.v{version}.{name}`
    pub(crate) subject: String,
    /// The hash of its schemas in this build.
    pub(crate) schema: String,
    /// Whether this instance serves it (`COHORT_SERVICES` may leave it to others).
    pub(crate) served_here: bool,
}

/// A disagreement between this instance and the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finding {
    /// Another instance serves the same command version with other schemas.
    Schema {
        command: CommandName,
        /// This instance.
        here: String,
        ours: String,
        /// The instance that disagrees.
        there: String,
        theirs: String,
    },
    /// This instance can call the command, but no instance serves it.
    Missing { command: CommandName, here: String },
    /// Another instance has the event with another schema, and one of the two consumes it.
    Event {
        /// The event's name.
        event: String,
        /// This instance.
        here: EventSide,
        /// The instance that disagrees.
        there: EventSide,
    },
}

/// One side of an event's schema drift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventSide {
    pub(crate) instance: String,
    /// The hash of its schema of the event.
    pub(crate) schema: String,
    /// Its subscriptions that consume the event; none when it only has the type.
    pub(crate) subscriptions: Vec<String>,
}

impl EventSide {
    fn of(instance: &str, event: &EventSchema) -> EventSide {
        EventSide {
            instance: instance.to_owned(),
            schema: event.schema.clone(),
            subscriptions: event.subscriptions.clone(),
        }
    }
}

impl fmt::Display for EventSide {
    /// `{schema} on instance `{instance}` ({role})`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on instance `{}` (", self.schema, self.instance)?;
        match self.subscriptions.as_slice() {
            [] => f.write_str("producer")?,
            [one] => write!(f, "subscription `{one}`")?,
            several => write!(f, "subscriptions `{}`", several.join("`, `"))?,
        }
        f.write_str(")")
    }
}

/// What a finding is about: the `command` or `event` label of the metric.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum About {
    Command(CommandName),
    Event(String),
}

impl fmt::Display for About {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            About::Command(command) => command.fmt(f),
            About::Event(event) => f.write_str(event),
        }
    }
}

impl Finding {
    pub(crate) fn about(&self) -> About {
        match self {
            Finding::Schema { command, .. } | Finding::Missing { command, .. } => {
                About::Command(*command)
            }
            Finding::Event { event, .. } => About::Event(event.clone()),
        }
    }

    /// `schema`, `missing` or `event`: the `kind` label of the metric.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Finding::Schema { .. } => "schema",
            Finding::Missing { .. } => "missing",
            Finding::Event { .. } => "event",
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Schema {
                command,
                here,
                ours,
                there,
                theirs,
            } => write!(
                f,
                "schema drift: `{command}` has schema {theirs} on instance \
                 `{there}` but {ours} on instance `{here}`"
            ),
            Finding::Missing { command, here } => write!(
                f,
                "missing command: no instance serves `{command}`, which \
                 instance `{here}` can call"
            ),
            Finding::Event { event, here, there } => write!(
                f,
                "schema drift: event `{event}` has schema {there} but {here}"
            ),
        }
    }
}

/// What `here` finds wrong about the commands of its table, given what every instance
/// `announced`: another instance serving one with other schemas, or nobody serving one. An
/// announcement without a schema hash (a service that is no Cohort instance) is not compared.
pub(crate) fn compare(known: &[Known], here: &str, announced: &[Announced]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for command in known {
        let mut served_elsewhere = false;
        for other in announced
            .iter()
            .filter(|a| a.subject == command.subject && a.instance != here)
        {
            served_elsewhere = true;
            match &other.schema {
                Some(theirs) if *theirs != command.schema => findings.push(Finding::Schema {
                    command: command.command,
                    here: here.to_owned(),
                    ours: command.schema.clone(),
                    there: other.instance.clone(),
                    theirs: theirs.clone(),
                }),
                _ => {}
            }
        }
        if !command.served_here && !served_elsewhere {
            findings.push(Finding::Missing {
                command: command.command,
                here: here.to_owned(),
            });
        }
    }
    findings
}

/// What `here`, which has the events `own`, finds wrong about them, given what every instance
/// `announced`: another instance with an event of a schema this build has not, where one of the
/// two consumes it. Two producers that disagree harm nobody; events without a schema are never
/// announced, so never compared.
pub(crate) fn compare_events(
    own: &[EventSchema],
    here: &str,
    announced: &[AnnouncedEvent],
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for other in announced.iter().filter(|a| a.instance != here) {
        let theirs = &other.event;
        let same_event = || own.iter().filter(|o| o.subject == theirs.subject);
        if same_event().any(|ours| ours.schema == theirs.schema) {
            continue;
        }
        for ours in same_event() {
            if ours.subscriptions.is_empty() && theirs.subscriptions.is_empty() {
                continue;
            }
            findings.push(Finding::Event {
                event: ours.event().to_owned(),
                here: EventSide::of(here, ours),
                there: EventSide::of(&other.instance, theirs),
            });
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUOTE: CommandName = CommandName {
        service: "pricing",
        version: 1,
        name: "quote",
    };

    fn known(served_here: bool) -> Known {
        Known {
            command: QUOTE,
            subject: "cohort.cmd.pricing.v1.quote".to_owned(),
            schema: "aaaa".to_owned(),
            served_here,
        }
    }

    fn announced(instance: &str, schema: Option<&str>) -> Announced {
        Announced::new(instance, "cohort.cmd.pricing.v1.quote", schema)
    }

    #[test]
    fn another_schema_on_another_instance_is_drift_naming_both() {
        let all = [
            announced("a", Some("aaaa")),
            announced("b", Some("bbbb")),
            announced("c", Some("aaaa")),
            announced("d", None),
        ];
        let findings = compare(&[known(true)], "a", &all);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].kind(), "schema");
        assert_eq!(
            findings[0].to_string(),
            "schema drift: `pricing.v1.quote` has schema bbbb on instance `b` but aaaa on \
             instance `a`"
        );
    }

    #[test]
    fn a_command_nobody_serves_is_missing_unless_this_instance_serves_it() {
        let own_only = [announced("a", Some("aaaa"))];
        assert_eq!(compare(&[known(true)], "a", &own_only), []);
        let findings = compare(&[known(false)], "a", &own_only);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].kind(), "missing");
        assert!(findings[0].to_string().contains("`pricing.v1.quote`"));
        let elsewhere = [announced("b", Some("aaaa"))];
        assert_eq!(compare(&[known(false)], "a", &elsewhere), []);
    }

    const PLACED: &str = "cohort.evt.*.order_placed";

    fn event(instance: &str, schema: &str, subscriptions: &[&str]) -> AnnouncedEvent {
        AnnouncedEvent {
            instance: instance.to_owned(),
            event: EventSchema::new(PLACED, schema, subscriptions),
        }
    }

    #[test]
    fn an_event_consumed_with_another_schema_is_drift_naming_both_sides() {
        let own = [EventSchema::new(PLACED, "aaaa", &["audit.record"])];
        let all = [
            event("a", "aaaa", &["audit.record"]),
            event("b", "bbbb", &[]),
            event("c", "aaaa", &[]),
            event("d", "dddd", &["shipping.pack", "mail.confirm"]),
        ];
        let findings = compare_events(&own, "a", &all);
        let lines: Vec<String> = findings.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "schema drift: event `order_placed` has schema bbbb on instance `b` (producer) \
                 but aaaa on instance `a` (subscription `audit.record`)",
                "schema drift: event `order_placed` has schema dddd on instance `d` \
                 (subscriptions `shipping.pack`, `mail.confirm`) but aaaa on instance `a` \
                 (subscription `audit.record`)",
            ]
        );
        assert!(findings.iter().all(|f| f.kind() == "event"));
        assert_eq!(findings[0].about(), About::Event("order_placed".to_owned()));
    }

    #[test]
    fn producers_that_disagree_and_schemas_this_build_has_are_no_drift() {
        let producer = [EventSchema::new(PLACED, "aaaa", &[])];
        assert_eq!(
            compare_events(&producer, "a", &[event("b", "bbbb", &[])]),
            []
        );
        let consumed = compare_events(&producer, "a", &[event("b", "bbbb", &["audit.record"])]);
        assert_eq!(
            consumed.len(),
            1,
            "a producer hears of a consumer that disagrees"
        );

        // Two types of one name in this build: the same build elsewhere agrees with it.
        let two_types = [
            EventSchema::new(PLACED, "aaaa", &["audit.record"]),
            EventSchema::new(PLACED, "cccc", &[]),
        ];
        let same_build = [
            event("b", "aaaa", &["audit.record"]),
            event("b", "cccc", &[]),
        ];
        assert_eq!(compare_events(&two_types, "a", &same_build), []);
        let other_prefix = AnnouncedEvent {
            instance: "b".to_owned(),
            event: EventSchema::new("other.evt.*.order_placed", "bbbb", &["x.y"]),
        };
        assert_eq!(compare_events(&two_types, "a", &[other_prefix]), []);
    }
}
