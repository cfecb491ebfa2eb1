//! Removes published events from their outboxes in batches: one command for all the events
//! published while the last one was on its way, off every caller's path.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::state::spi::StateStore;

/// Publications (a unit's events each) whose entries one round removes at most.
const BATCH: usize = 128;

/// Entries of one outbox, published.
type Published = (String, Vec<String>);

/// The outbox entries this instance published, on their way out of the store.
pub(crate) struct Sweeper {
    published: mpsc::UnboundedSender<Published>,
}

impl Sweeper {
    /// Starts removing from `store` what [`Sweeper::sweep`] is given, until the sweeper is dropped.
    pub(crate) fn start(store: Arc<dyn StateStore>) -> Sweeper {
        let (published, queue) = mpsc::unbounded_channel();
        tokio::spawn(sweep_until_closed(store, queue));
        Sweeper { published }
    }

    /// Removes `ids`, published, from `outbox` soon. Entries left behind (a failed removal, an
    /// instance gone first) are published again by the relay and dropped by the broker as copies.
    pub(crate) fn sweep(&self, outbox: String, ids: Vec<String>) {
        if !ids.is_empty() {
            // Closed only when the instance is going: then the relay takes over.
            let _ = self.published.send((outbox, ids));
        }
    }
}

async fn sweep_until_closed(
    store: Arc<dyn StateStore>,
    mut queue: mpsc::UnboundedReceiver<Published>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        for (outbox, ids) in by_outbox(batch.drain(..)) {
            if let Err(err) = store.outbox_remove(&outbox, &ids).await {
                tracing::warn!(error = %err, "could not remove published events from the outbox");
            }
        }
    }
}

/// The entries grouped by outbox, in the order the outboxes first come (an instance has one per
/// service it runs, so a list rather than a map).
fn by_outbox(published: impl Iterator<Item = Published>) -> Vec<Published> {
    let mut grouped: Vec<Published> = Vec::new();
    for (outbox, ids) in published {
        match grouped.iter_mut().find(|(o, _)| *o == outbox) {
            Some((_, all)) => all.extend(ids),
            None => grouped.push((outbox, ids)),
        }
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_grouped_by_outbox_in_order() {
        let ids = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let published = [
            ("a", ids(&["1"])),
            ("b", ids(&["2"])),
            ("a", ids(&["3", "4"])),
        ];
        let grouped = by_outbox(published.into_iter().map(|(o, ids)| (o.to_owned(), ids)));
        assert_eq!(
            grouped,
            vec![
                ("a".to_owned(), ids(&["1", "3", "4"])),
                ("b".to_owned(), ids(&["2"]))
            ]
        );
    }
}
