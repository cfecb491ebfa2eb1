//! When the ticks of a periodic task fall: on the wall clock, so that every instance agrees which
//! tick is which.

use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::registry::TaskSchedule;

/// The parsed schedule of a periodic task.
#[derive(Debug, Clone)]
pub(crate) enum Timing {
    /// At every multiple of the period since the Unix epoch.
    Every(u64),
    /// At the times of a cron expression, in UTC.
    Cron(Box<Cron>),
}

impl Timing {
    /// The timing of `schedule`; `None` for an `on_start` task, which has no ticks. An error for
    /// an expression the macro would have refused (a descriptor written by hand).
    pub(crate) fn of(schedule: TaskSchedule) -> Result<Option<Timing>, String> {
        match schedule {
            TaskSchedule::Every { ms: 0 } => Err("a period of zero".to_owned()),
            TaskSchedule::Every { ms } => Ok(Some(Timing::Every(ms))),
            TaskSchedule::Cron { expression } => CronParser::builder()
                .seconds(Seconds::Disallowed)
                .year(Year::Disallowed)
                .build()
                .parse(expression)
                .map(|cron| Some(Timing::Cron(Box::new(cron))))
                .map_err(|e| format!("invalid cron expression `{expression}`: {e}")),
            TaskSchedule::OnStart => Ok(None),
        }
    }

    /// The first tick strictly after `after` (milliseconds since the epoch, as are ticks).
    pub(crate) fn next_after(&self, after: u64) -> Option<u64> {
        match self {
            Timing::Every(period) => (after / period + 1).checked_mul(*period),
            Timing::Cron(cron) => {
                let at = DateTime::<Utc>::from_timestamp_millis(i64::try_from(after).ok()?)?;
                let next = cron.find_next_occurrence(&at, false).ok()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }

    /// The time from `tick` to the one after it.
    pub(crate) fn period_at(&self, tick: u64) -> Duration {
        let next = self.next_after(tick).unwrap_or(u64::MAX);
        Duration::from_millis(next.saturating_sub(tick))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_aligned_on_the_epoch() {
        let every = Timing::Every(30_000);
        assert_eq!(every.next_after(0), Some(30_000));
        assert_eq!(every.next_after(29_999), Some(30_000));
        assert_eq!(every.next_after(30_000), Some(60_000));
        assert_eq!(every.period_at(30_000), Duration::from_secs(30));
    }

    #[test]
    fn cron_ticks_are_utc_minutes() {
        let Ok(Some(cron)) = Timing::of(TaskSchedule::Cron {
            expression: "0 3 * * *",
        }) else {
            panic!("a valid expression");
        };
        // 2026-01-01T00:00:00Z
        let new_year = 1_767_225_600_000;
        assert_eq!(cron.next_after(new_year), Some(new_year + 3 * 3_600_000));
        assert_eq!(
            cron.period_at(new_year + 3 * 3_600_000),
            Duration::from_secs(24 * 3600)
        );
    }

    #[test]
    fn bad_expressions_are_refused() {
        for expression in ["0 3 * *", "61 * * * *", "* * * * * *"] {
            assert!(
                Timing::of(TaskSchedule::Cron { expression }).is_err(),
                "{expression}"
            );
        }
    }
}
