//! The embedded broker: commands and events inside one process, through the same envelope,
//! headers and deadlines as over NATS. Events are kept in memory only: they do not survive a
//! restart of the process (use NATS for that). The latest ones are kept for the start positions
//! of every-instance subscriptions.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::{BoxFuture, ready};
use tokio::sync::mpsc;

use super::spi::{
    Broker, Endpoint, EventHandler, Message, RequestHandler, StartPosition, SubscriptionSpec,
    SubscriptionStats, Work, header,
};
use super::{no_responders, subject_matches, timed_out};
use crate::error::Error;
use crate::timer::within;

/// Commands and events within this process. Clones share the same broker.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Subject → the handlers serving it (one per serving app in this process), taken in turn.
    endpoints: RwLock<HashMap<String, Served>>,
    /// Locked before `history`, and held while an event is routed and recorded, so that a
    /// subscriber that replays the history and then takes new events misses none between them.
    subscriptions: Mutex<Vec<Subscriber>>,
    /// The latest events published, oldest first, with when.
    history: Mutex<VecDeque<(Delivery, Instant)>>,
    /// Turns for picking one subscriber of a shared subscription.
    next_subscriber: AtomicUsize,
    dead_letters: Mutex<Vec<(String, Message)>>,
    /// Message ids published within the duplicate window, as JetStream keeps them.
    published: Mutex<HashMap<String, Instant>>,
}

/// How many of the latest events the broker keeps for start positions.
const HISTORY: usize = 10_000;

/// How long a message id is remembered to drop a second publish of it: JetStream's default.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Served {
    handlers: Vec<(usize, RequestHandler)>,
    next: AtomicUsize,
}

struct Subscriber {
    filter: String,
    /// `{service}__{subscription}`, for the dashboard's counts.
    durable: String,
    /// Its deliveries started and not finished (a failed one waits here for its retry).
    in_flight: Arc<AtomicU64>,
    /// The durable name shared by every instance's subscriber, so that one of them gets each
    /// event; `None` for an every-instance subscription, whose subscribers each get every event.
    group: Option<String>,
    queue: mpsc::UnboundedSender<Delivery>,
}

/// An event on its way to a subscriber, with the subject it was published to.
type Delivery = (Arc<str>, Message);

/// Each `serve` call's handlers are removed together when its work stops.
static SERVE_IDS: AtomicUsize = AtomicUsize::new(0);

impl MemoryBroker {
    /// A broker of its own; clone it to share it between in-process instances.
    pub fn new() -> Self {
        Self::default()
    }

    /// The events that exhausted their attempts, with the subject they were dead-lettered to.
    pub fn dead_letters(&self) -> Vec<(String, Message)> {
        lock(&self.inner.dead_letters).clone()
    }
}

impl Inner {
    /// Starts `msg` on one of the handlers serving `subject`, taken in turn. The handler is called
    /// under the read lock instead of cloned out of it: a clone would bump a counter that every
    /// worker thread shares, on every command.
    fn start(&self, subject: &str, msg: Message) -> Option<BoxFuture<'static, Message>> {
        let endpoints = self.endpoints.read().unwrap_or_else(|p| p.into_inner());
        let served = endpoints.get(subject)?;
        // One handler is the rule outside tests: it needs no turn, nor the shared count of turns.
        let turn = match served.handlers.len() {
            1 => 0,
            n => served.next.fetch_add(1, Ordering::Relaxed) % n.max(1),
        };
        let (_, handler) = served.handlers.get(turn)?;
        Some(handler(msg))
    }

    /// Routes a new event and keeps it in the history.
    fn publish(&self, subject: &Arc<str>, msg: &Message) {
        let mut subscribers = lock(&self.subscriptions);
        self.route(&mut subscribers, subject, msg, None);
        let mut history = lock(&self.history);
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(((subject.clone(), msg.clone()), Instant::now()));
    }

    /// The events of the history a subscriber of `filter` starting at `start` gets first.
    fn replay(&self, filter: &str, start: StartPosition) -> Vec<Delivery> {
        let history = lock(&self.history);
        let matching = history
            .iter()
            .filter(|((subject, _), _)| subject_matches(filter, subject));
        let replayed: Vec<&(Delivery, Instant)> = match start {
            StartPosition::Last(n) => {
                let mut last: Vec<_> = matching
                    .rev()
                    .take(usize::try_from(n).unwrap_or(usize::MAX))
                    .collect();
                last.reverse();
                last
            }
            StartPosition::Since(window) => match Instant::now().checked_sub(window) {
                Some(from) => matching.filter(|(_, at)| *at >= from).collect(),
                None => matching.collect(),
            },
            _ => Vec::new(),
        };
        replayed
            .into_iter()
            .map(|(delivery, _)| delivery.clone())
            .collect()
    }

    /// Hands `msg` to the matching subscribers: every every-instance subscriber, and one member
    /// of each shared subscription (`only_group` limits it to that one group).
    fn route(
        &self,
        subscribers: &mut Vec<Subscriber>,
        subject: &Arc<str>,
        msg: &Message,
        only_group: Option<&str>,
    ) {
        subscribers.retain(|s| !s.queue.is_closed());
        let mut groups: HashMap<&str, Vec<&Subscriber>> = HashMap::new();
        for subscriber in subscribers
            .iter()
            .filter(|s| subject_matches(&s.filter, subject))
        {
            match (&subscriber.group, only_group) {
                (None, None) => {
                    let _ = subscriber.queue.send((subject.clone(), msg.clone()));
                }
                (Some(group), only) if only.is_none_or(|only| only == group) => {
                    groups.entry(group).or_default().push(subscriber);
                }
                _ => {}
            }
        }
        for members in groups.values() {
            let turn = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
            // A send fails only if the member stopped a moment ago; it hands its queue back then.
            let _ = members[turn % members.len()]
                .queue
                .send((subject.clone(), msg.clone()));
        }
    }

    /// Whether `msg` was not published yet within the duplicate window (by its message id).
    fn first_publish(&self, msg: &Message) -> bool {
        let Some(id) = msg.meta.message_id() else {
            return true;
        };
        let now = Instant::now();
        let mut published = lock(&self.published);
        if published.len() % 1024 == 1023 {
            published.retain(|_, at| now.duration_since(*at) < DUPLICATE_WINDOW);
        }
        match published.get(id) {
            Some(at) if now.duration_since(*at) < DUPLICATE_WINDOW => false,
            _ => {
                published.insert(id.to_owned(), now);
                true
            }
        }
    }

    fn unserve(&self, serve_id: usize) {
        let mut endpoints = self.endpoints.write().unwrap_or_else(|p| p.into_inner());
        endpoints.retain(|_, served| {
            served.handlers.retain(|(id, _)| *id != serve_id);
            !served.handlers.is_empty()
        });
    }
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing holds these locks across a panic point that could leave the data inconsistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Broker for MemoryBroker {
    // The message goes to its handler before the future is made.
    fn request<'a>(
        &'a self,
        subject: &'a str,
        msg: Message,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message, Error>> {
        let Some(handling) = self.inner.start(subject, msg) else {
            return Box::pin(ready(Err(no_responders(subject))));
        };
        // The handler runs when first polled until it first waits, so the time limit starts
        // there: a command that never waits needs no timer.
        Box::pin(async move {
            within(|| timeout, handling)
                .await
                .map_err(|_| timed_out(subject, timeout))
        })
    }

    async fn publish(&self, subject: &str, msg: Message) -> Result<(), Error> {
        if !self.inner.first_publish(&msg) {
            return Ok(());
        }
        self.inner.publish(&Arc::from(subject), &msg);
        Ok(())
    }

    async fn serve(
        &self,
        endpoints: Vec<(Endpoint, RequestHandler)>,
        work: &Work,
    ) -> Result<(), Error> {
        let serve_id = SERVE_IDS.fetch_add(1, Ordering::Relaxed);
        {
            let mut served = self
                .inner
                .endpoints
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for (endpoint, handler) in endpoints {
                served
                    .entry(endpoint.subject)
                    .or_default()
                    .handlers
                    .push((serve_id, handler));
            }
        }
        let stop = work.stop.clone();
        // A weak reference, so that a broker nobody uses any more is freed.
        let inner = Arc::downgrade(&self.inner);
        work.tasks.spawn(async move {
            stop.cancelled().await;
            if let Some(inner) = inner.upgrade() {
                inner.unserve(serve_id);
            }
        });
        Ok(())
    }

    async fn subscribe(
        &self,
        spec: SubscriptionSpec,
        handler: EventHandler,
        work: &Work,
    ) -> Result<(), Error> {
        let (queue, mut deliveries) = mpsc::unbounded_channel::<Delivery>();
        let group = (!spec.every_instance).then(|| spec.durable.clone());
        let in_flight = Arc::new(AtomicU64::new(0));
        let mut subscribers = lock(&self.inner.subscriptions);
        if spec.every_instance {
            for delivery in self.inner.replay(&spec.filter_subject, spec.start) {
                // The receiver is right here: the send cannot fail.
                let _ = queue.send(delivery);
            }
        }
        subscribers.push(Subscriber {
            filter: spec.filter_subject.clone(),
            durable: spec.durable.clone(),
            in_flight: in_flight.clone(),
            group: group.clone(),
            queue,
        });
        drop(subscribers);
        let spec = Arc::new(spec);
        let work_inner = work.clone();
        let broker = Arc::downgrade(&self.inner);
        work.tasks.spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = work_inner.stop.cancelled() => break,
                    delivery = deliveries.recv() => match delivery { Some((_, msg)) => msg, None => break },
                };
                let (spec, handler, broker) = (spec.clone(), handler.clone(), broker.clone());
                let counted = InFlight::start(in_flight.clone());
                work_inner.tasks.spawn(async move {
                    deliver(msg, spec, handler, broker).await;
                    drop(counted);
                });
            }
            hand_back(&mut deliveries, group.as_deref(), &broker);
        });
        Ok(())
    }

    async fn subscription_stats(
        &self,
        spec: &SubscriptionSpec,
    ) -> Result<Option<SubscriptionStats>, Error> {
        let in_flight = lock(&self.inner.subscriptions)
            .iter()
            .filter(|s| s.durable == spec.durable && !s.queue.is_closed())
            .map(|s| s.in_flight.load(Ordering::Relaxed))
            .sum();
        let dead_letters = lock(&self.inner.dead_letters)
            .iter()
            .filter(|(subject, _)| *subject == spec.dead_letter_subject)
            .count();
        // Events are handed out as they are published: none waits for an instance to take it.
        Ok(Some(SubscriptionStats {
            in_flight,
            dead_letters: dead_letters as u64,
            ..SubscriptionStats::default()
        }))
    }

    fn is_distributed(&self) -> bool {
        false
    }

    fn is_ready(&self) -> bool {
        true
    }
}

/// A stopping subscriber passes the events it had not started to the other members of its shared
/// subscription, as NATS would redeliver unacknowledged ones.
fn hand_back(
    deliveries: &mut mpsc::UnboundedReceiver<Delivery>,
    group: Option<&str>,
    broker: &Weak<Inner>,
) {
    deliveries.close();
    let (Some(group), Some(broker)) = (group, broker.upgrade()) else {
        return;
    };
    let mut subscribers = lock(&broker.subscriptions);
    while let Ok((subject, msg)) = deliveries.try_recv() {
        broker.route(&mut subscribers, &subject, &msg, Some(group));
    }
}

/// Counts one delivery in flight while it lives.
struct InFlight(Arc<AtomicU64>);

impl InFlight {
    fn start(count: Arc<AtomicU64>) -> InFlight {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Delivers one event until the handler succeeds or the attempts run out.
async fn deliver(
    msg: Message,
    spec: Arc<SubscriptionSpec>,
    handler: EventHandler,
    broker: Weak<Inner>,
) {
    for attempt in 1.. {
        if attempt > 1 {
            spec.report.redelivered();
        }
        let Err(err) = handler(msg.clone()).await else {
            return;
        };
        match spec.retry_after(attempt, &err) {
            Some(wait) => {
                tracing::warn!(subscription = %spec.durable, attempt, error = %err, "event handler failed; will retry");
                tokio::time::sleep(wait).await;
            }
            None => {
                tracing::error!(subscription = %spec.durable, attempts = attempt, error = %err, dead_letter = %spec.dead_letter_subject, "event handler gave up; event dead-lettered");
                let mut letter = msg.clone();
                letter.meta.set_header(header::ERROR, &err.to_string());
                if let Some(broker) = broker.upgrade() {
                    lock(&broker.dead_letters).push((spec.dead_letter_subject.clone(), letter));
                }
                spec.report.dead_lettered();
                return;
            }
        }
    }
}
