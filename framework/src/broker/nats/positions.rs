//! Where an every-instance consumer starts: the JetStream deliver policy of a start position,
//! found with nothing newer than nats-server 2.9.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::ConsumerErrorKind;

use super::Inner;
use crate::broker::spi::{StartPosition, SubscriptionSpec};
use crate::error::Error;

impl Inner {
    /// Where `spec`'s consumer starts if it is made now.
    pub(super) async fn deliver_policy(
        &self,
        spec: &SubscriptionSpec,
    ) -> Result<DeliverPolicy, Error> {
        match spec.start {
            StartPosition::Last(n) => self.last(n, &spec.filter_subject).await,
            StartPosition::Since(window) => Ok(DeliverPolicy::ByStartTime {
                start_time: started_before(window)?,
            }),
            // A consumer made anew has nothing to resume.
            _ => Ok(DeliverPolicy::New),
        }
    }

    /// Removes the consumer `name` if it exists.
    pub(super) async fn delete_consumer(&self, name: &str) -> Result<(), Error> {
        let stream = self.subjects.events_stream();
        match self
            .jetstream
            .delete_consumer_from_stream(name, &stream)
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => match err.kind() {
                ConsumerErrorKind::JetStream(js)
                    if matches!(
                        js.error_code(),
                        ErrorCode::CONSUMER_NOT_FOUND | ErrorCode::STREAM_NOT_FOUND
                    ) =>
                {
                    Ok(())
                }
                _ => Err(Error::unavailable(format!(
                    "cannot remove the JetStream consumer `{name}` on `{stream}` to start it again: {err}"
                ))),
            },
        }
    }

    /// Where the last `n` stored events of `filter` begin: the latest stream sequence from which
    /// `n` of them remain, found by halving the stream's range (the server counts what a
    /// consumer starting at a sequence has pending, but cannot count backwards).
    async fn last(&self, n: u64, filter: &str) -> Result<DeliverPolicy, Error> {
        let stream_name = self.subjects.events_stream();
        let stream = self
            .jetstream
            .get_stream(&stream_name)
            .await
            .map_err(|err| {
                Error::unavailable(format!("cannot read the stream `{stream_name}`: {err}"))
            })?;
        let state = stream.cached_info().state.clone();
        if state.messages == 0 || self.pending_from(state.first_sequence, filter).await? <= n {
            return Ok(DeliverPolicy::All);
        }
        // pending_from(at_least_n) >= n > pending_from(too_late), and each sequence holds one event.
        let (mut at_least_n, mut too_late) = (state.first_sequence, state.last_sequence + 1);
        while too_late - at_least_n > 1 {
            let middle = at_least_n + (too_late - at_least_n) / 2;
            if self.pending_from(middle, filter).await? >= n {
                at_least_n = middle;
            } else {
                too_late = middle;
            }
        }
        Ok(DeliverPolicy::ByStartSequence {
            start_sequence: at_least_n,
        })
    }

    /// How many stored events of `filter` have a stream sequence from `sequence` on, as a
    /// short-lived consumer starting there counts them.
    async fn pending_from(&self, sequence: u64, filter: &str) -> Result<u64, Error> {
        let stream = self.subjects.events_stream();
        let probe = pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: sequence,
            },
            filter_subject: filter.to_owned(),
            // Removed by the server should this instance stop before it removes it.
            inactive_threshold: Duration::from_secs(10),
            ..Default::default()
        };
        let mut consumer = self
            .jetstream
            .create_consumer_on_stream(probe, &stream)
            .await
            .map_err(|err| {
                Error::unavailable(format!(
                    "cannot count the events of `{filter}` in `{stream}`: {err}"
                ))
            })?;
        let info = consumer.info().await.map_err(|err| {
            Error::unavailable(format!(
                "cannot count the events of `{filter}` in `{stream}`: {err}"
            ))
        })?;
        let (pending, name) = (info.num_pending, info.name.clone());
        self.delete_consumer(&name).await?;
        Ok(pending)
    }
}

/// The time `window` before now, as JetStream takes it.
fn started_before(window: Duration) -> Result<async_nats::datetime::DateTime, Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let start = now.saturating_sub(window).as_nanos();
    async_nats::datetime::from_nanos(i128::try_from(start).unwrap_or(i128::MAX)).map_err(|err| {
        Error::internal(format!(
            "cannot start a subscription {window:?} in the past: {err}"
        ))
    })
}
