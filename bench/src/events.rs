//! The events scenario's shared pieces: the event both sides send, the paced emit loop and the
//! end-to-end latency record, so that Cohort and the hand-written contenders send, time and count
//! events with the same code (and the same JSON: the schemas are for Cohort's commands).

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt, TryStreamExt, stream};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, sleep_until};

/// The event: its sequence number in the emitting run and when it was emitted (µs since the Unix
/// epoch; both processes read the same machine's clock).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
pub struct Tick {
    pub seq: u64,
    pub sent_us: u64,
}

/// `POST /emit`: emit for `seconds`, `rate` events a second (0: as fast as the acks come back),
/// with at most `concurrency` publishes waiting for their ack.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
pub struct EmitRun {
    pub seconds: f64,
    pub rate: u64,
    pub concurrency: usize,
}

/// The answer to `POST /emit`: how many events were emitted (each acknowledged by JetStream), in
/// how long.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
pub struct EmitReport {
    pub emitted: u64,
    pub seconds: f64,
}

impl EmitRun {
    /// Why the run cannot be done, if it cannot.
    pub fn invalid(&self) -> Option<&'static str> {
        if !(self.seconds.is_finite() && self.seconds > 0.0 && self.seconds <= 3600.0) {
            Some("seconds must be above 0 and at most 3600")
        } else if self.concurrency == 0 || self.concurrency > 4096 {
            Some("concurrency must be 1 to 4096")
        } else {
            None
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

/// Emits ticks as `run` says, each through `emit` (which returns once the event is stored), and
/// stops at the first error. A tick's time is when it was due in a paced run, and when its publish
/// starts in a saturating one.
pub async fn emit_for<E, F, Fut>(run: EmitRun, emit: F) -> Result<EmitReport, E>
where
    F: Fn(Tick) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let (start, start_us) = (Instant::now(), now_us());
    let end = start + Duration::from_secs_f64(run.seconds);
    let due = move |seq: u64| match run.rate {
        0 => start,
        rate => start + Duration::from_secs_f64(seq as f64 / rate as f64),
    };
    let emitted = stream::iter(0u64..)
        .then(|seq| async move {
            sleep_until(due(seq)).await;
            seq
        })
        // A paced run emits exactly its rate times its seconds; a saturating one, until its end.
        .take_while(move |seq| {
            std::future::ready(match run.rate {
                0 => Instant::now() < end,
                rate => (*seq as f64) < run.seconds * rate as f64,
            })
        })
        .map(|seq| {
            let sent_us = match run.rate {
                0 => now_us(),
                // When it was due: an emitter that falls behind counts its delay too.
                rate => start_us + seq * 1_000_000 / rate,
            };
            emit(Tick { seq, sent_us })
        })
        .buffer_unordered(run.concurrency)
        .try_fold(0u64, |n, ()| std::future::ready(Ok(n + 1)))
        .await?;
    Ok(EmitReport {
        emitted,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// What a consumer saw since its last reset: `GET /stats`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
pub struct ConsumedStats {
    /// Deliveries handled (a redelivered event counts again).
    pub processed: u64,
    /// The effect counter in Redis (all time; the bare contender: `processed`).
    pub applied: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// The earliest emit time and the latest end of handling among them (µs since the epoch).
    pub first_sent_us: u64,
    pub last_done_us: u64,
}

/// End-to-end latencies of the events handled since the last reset.
#[derive(Debug, Default)]
pub struct Latencies {
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    latencies_us: Vec<u64>,
    first_sent_us: u64,
    last_done_us: u64,
}

impl Latencies {
    pub const fn new() -> Latencies {
        Latencies {
            seen: Mutex::new(Seen {
                latencies_us: Vec::new(),
                first_sent_us: 0,
                last_done_us: 0,
            }),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // Plain numbers, never left half-written.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One event emitted at `sent_us` is handled now.
    pub fn record(&self, sent_us: u64) {
        let done = now_us();
        let mut seen = self.seen();
        seen.latencies_us.push(done.saturating_sub(sent_us));
        if seen.first_sent_us == 0 || sent_us < seen.first_sent_us {
            seen.first_sent_us = sent_us;
        }
        seen.last_done_us = seen.last_done_us.max(done);
    }

    pub fn reset(&self) {
        *self.seen() = Seen::default();
    }

    /// The stats so far, with the effect counter `applied`.
    pub fn stats(&self, applied: u64) -> ConsumedStats {
        let mut latencies = {
            let seen = self.seen();
            (
                seen.latencies_us.clone(),
                seen.first_sent_us,
                seen.last_done_us,
            )
        };
        latencies.0.sort_unstable();
        let (sorted, first_sent_us, last_done_us) = latencies;
        ConsumedStats {
            processed: sorted.len() as u64,
            applied,
            p50_us: percentile(&sorted, 50),
            p99_us: percentile(&sorted, 99),
            max_us: sorted.last().copied().unwrap_or(0),
            first_sent_us,
            last_done_us,
        }
    }
}

/// The `p`-th percentile of `sorted` (nearest rank), 0 when empty.
fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let sorted: Vec<u64> = (1..=200).collect();
        assert_eq!(percentile(&sorted, 50), 100);
        assert_eq!(percentile(&sorted, 99), 198);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[], 50), 0);
    }

    #[tokio::test]
    async fn a_paced_run_emits_its_rate() {
        let run = EmitRun {
            seconds: 0.2,
            rate: 100,
            concurrency: 4,
        };
        let report = emit_for(run, |_| async { Ok::<(), ()>(()) }).await;
        assert_eq!(report.map(|r| r.emitted), Ok(20));
    }
}
