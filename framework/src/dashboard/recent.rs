//! The last commands this instance ran, in a small ring that the hot path fills without
//! allocating: a fixed-size entry copied under a short lock.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::spans::TraceId;

/// How many commands the ring keeps.
pub(crate) const RECENT_CAPACITY: usize = 50;

/// One command this instance ran.
#[derive(Clone, Copy)]
struct Entry {
    at: SystemTime,
    trace: Option<TraceId>,
    service: &'static str,
    command: &'static str,
    status: u16,
    took: Duration,
}

/// A command as the dashboard lists it.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct RecentCommand {
    /// When it finished, in milliseconds since the Unix epoch.
    pub(crate) at: u64,
    /// `None` when the command had no trace: its caller sent none and nothing asked for one.
    pub(crate) trace_id: Option<String>,
    pub(crate) service: &'static str,
    pub(crate) command: &'static str,
    pub(crate) status: u16,
    pub(crate) duration_ms: f64,
}

/// The ring of the last [`RECENT_CAPACITY`] commands.
pub(crate) struct Recent {
    entries: Mutex<VecDeque<Entry>>,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            entries: Mutex::new(VecDeque::with_capacity(RECENT_CAPACITY)),
        }
    }
}

impl Recent {
    /// Keeps one command, forgetting the oldest when the ring is full.
    pub(crate) fn record(
        &self,
        trace: Option<TraceId>,
        service: &'static str,
        command: &'static str,
        status: u16,
        took: Duration,
    ) {
        let entry = Entry {
            at: SystemTime::now(),
            trace,
            service,
            command,
            status,
            took,
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == RECENT_CAPACITY {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// The commands kept, newest first.
    pub(crate) fn newest_first(&self) -> Vec<RecentCommand> {
        let entries: Vec<Entry> = {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            entries.iter().rev().copied().collect()
        };
        entries
            .iter()
            .map(|e| RecentCommand {
                at: crate::message::unix_millis(e.at),
                trace_id: e.trace.map(|t| t.as_str().to_owned()),
                service: e.service,
                command: e.command,
                status: e.status,
                duration_ms: e.took.as_secs_f64() * 1000.0,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_commands_first_and_forgets_the_oldest() {
        let recent = Recent::default();
        for n in 0..RECENT_CAPACITY + 2 {
            let status = 200 + u16::try_from(n).expect("small");
            let trace = (n % 2 == 1).then(|| TraceId::of("4bf92f3577b34da6a3ce929d0e0e4736"));
            recent.record(trace, "s", "c", status, Duration::ZERO);
        }
        let listed = recent.newest_first();
        assert_eq!(listed.len(), RECENT_CAPACITY);
        assert_eq!(listed[0].status, 200 + RECENT_CAPACITY as u16 + 1);
        assert_eq!(listed[RECENT_CAPACITY - 1].status, 202);
        let trace = |n: usize| listed[n].trace_id.as_deref();
        assert_eq!(trace(0), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace(1), None);
    }
}
