//! A subscription's backlog, read from the server: its consumer's pending and unacknowledged
//! events, and the dead letters it left in the dead-letter stream.

use futures_util::TryStreamExt;

use super::Inner;
use super::subscriptions::consumer_name;
use crate::broker::spi::{SubscriptionSpec, SubscriptionStats};
use crate::error::Error;

/// The backlog of `spec`'s consumer (this instance's own, for an every-instance subscription).
pub(super) async fn backlog(
    inner: &Inner,
    spec: &SubscriptionSpec,
) -> Result<SubscriptionStats, Error> {
    let consumer = consumer_name(spec, &inner.instance_id);
    let unreadable = |err: &dyn std::fmt::Display| {
        Error::broker_unavailable(format!("cannot read the backlog of `{consumer}`: {err}"))
    };
    let events = inner
        .jetstream
        .get_stream_no_info(inner.subjects.events_stream())
        .await
        .map_err(|e| unreadable(&e))?;
    let info = events
        .consumer_info(&consumer)
        .await
        .map_err(|e| unreadable(&e))?;
    let dead_letters = inner
        .jetstream
        .get_stream_no_info(inner.subjects.dead_letter_stream())
        .await
        .map_err(|e| unreadable(&e))?;
    // The count of one subject, which the server gives without reading the messages.
    let dead: usize = dead_letters
        .info_with_subjects(&spec.dead_letter_subject)
        .await
        .map_err(|e| unreadable(&e))?
        .map_ok(|(_, count)| count)
        .try_fold(0, |sum, count| async move { Ok(sum + count) })
        .await
        .map_err(|e| unreadable(&e))?;
    Ok(SubscriptionStats {
        pending: info.num_pending,
        in_flight: info.num_ack_pending as u64,
        redelivered: info.num_redelivered as u64,
        dead_letters: dead as u64,
    })
}
