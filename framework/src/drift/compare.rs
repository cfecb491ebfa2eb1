//! What an instance finds when it compares its table of commands with what the others announce.

use std::fmt;

use crate::broker::spi::Announced;
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
}

impl Finding {
    pub(crate) fn command(&self) -> CommandName {
        match self {
            Finding::Schema { command, .. } | Finding::Missing { command, .. } => *command,
        }
    }

    /// `schema` or `missing`: the `kind` label of the metric.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Finding::Schema { .. } => "schema",
            Finding::Missing { .. } => "missing",
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let command = self.command();
        match self {
            Finding::Schema {
                here,
                ours,
                there,
                theirs,
                ..
            } => write!(
                f,
                "schema drift: `{command}` has schema {theirs} on instance \
                 `{there}` but {ours} on instance `{here}`"
            ),
            Finding::Missing { here, .. } => write!(
                f,
                "missing command: no instance serves `{command}`, which \
                 instance `{here}` can call"
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
}
