//! Outages of a connection to a server, logged once each: a WARN when the connection is lost, an
//! INFO when it is back, however many operations fail or succeed in between.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether a connection is down, and how it is named in the log.
#[derive(Debug)]
pub(crate) struct Outage {
    /// What is connected to, as the log names it: "NATS at `nats://…`" (credentials masked).
    what: String,
    lost: AtomicBool,
}

impl Outage {
    pub(crate) fn new(what: String) -> Outage {
        Outage {
            what,
            lost: AtomicBool::new(false),
        }
    }

    /// The connection failed (`cause`): logged if it was up until now.
    pub(crate) fn lost(&self, cause: &dyn Display, consequence: &str) {
        if !self.lost.swap(true, Ordering::Relaxed) {
            tracing::warn!(target: "cohort::outage", cause = %cause, "lost the connection to {}; {consequence}", self.what);
        }
    }

    /// The connection works: logged if it was lost until now. One load when nothing changes.
    pub(crate) fn back(&self) {
        if self.lost.load(Ordering::Relaxed) && self.lost.swap(false, Ordering::Relaxed) {
            tracing::info!(target: "cohort::outage", "the connection to {} is back", self.what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_count() {
        let outage = Outage::new("a server".to_owned());
        outage.back();
        assert!(!outage.lost.load(Ordering::Relaxed));
        outage.lost(&"refused", "retrying");
        outage.lost(&"refused", "retrying");
        assert!(outage.lost.load(Ordering::Relaxed));
        outage.back();
        assert!(!outage.lost.load(Ordering::Relaxed));
    }
}
