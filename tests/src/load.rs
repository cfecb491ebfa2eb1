//! A load of HTTP calls from several concurrent clients, bounded in count and in time, that keeps
//! every attempt: its status and body, how long it took, which instance answered it
//! (`x-cohort-instance`) and which ran it (`x-cohort-executed-by`).
//!
//! A call whose outcome is unsettled (no answer, a 503) is sent again, identical and with the same
//! `Idempotency-Key`, as a careful client retries: then every call of the load ends settled, and
//! what the server stored can be compared with what its clients were told, exactly.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cohort::testing::{eventually, lock};
use reqwest::Method;
use serde_json::Value;
use tokio::task::JoinHandle;

/// The pause before an unsettled call is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How much of a body an attempt's description shows.
const SHOWN_BODY: usize = 200;

/// One HTTP request of the load.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Value,
    /// Sent as the `Idempotency-Key` header, the same on every attempt of the call.
    pub idempotency_key: Option<String>,
    /// Sent as the `Cookie` header: the session of a signed-in user.
    pub cookie: Option<String>,
}

/// What a load sends, to whom, and for how long.
pub struct Plan {
    /// Base URLs of the instances that take the load: call `n` goes to target `n`, modulo their
    /// number, and its retries to the next ones.
    pub targets: Vec<String>,
    /// Clients sending at once, each one call after another.
    pub clients: usize,
    /// At most this many calls.
    pub calls: usize,
    /// No call starts after this long.
    pub duration: Duration,
    /// Each client's pause between two calls.
    pub pace: Duration,
    /// An attempt that gets no answer within this is given up and recorded as unanswered.
    pub give_up_after: Duration,
    /// Whether an attempt left its call unsettled, to be sent again.
    pub unsettled: fn(&Attempt) -> bool,
    /// Unsettled calls are sent again until this long after `duration`.
    pub retry_for: Duration,
}

/// One attempt of a call, as its client saw it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The call's number in the load.
    pub call: usize,
    /// 1 for the first attempt of the call.
    pub number: u32,
    pub idempotency_key: Option<String>,
    pub target: String,
    pub started: Instant,
    pub latency: Duration,
    /// `None` when no HTTP answer came: see `error`.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub body: Value,
    pub text: String,
    /// The instance that answered HTTP.
    pub instance: Option<String>,
    /// The instance that ran the command.
    pub executed_by: Option<String>,
}

impl Attempt {
    pub fn ended(&self) -> Instant {
        self.started + self.latency
    }

    /// The problem's stable code, when the answer is an error.
    pub fn code(&self) -> Option<&str> {
        self.body.get("code").and_then(Value::as_str)
    }

    /// The status as text, `no answer` when none came.
    pub fn outcome(&self) -> String {
        self.status
            .map_or_else(|| "no answer".to_owned(), |status| status.to_string())
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = match &self.error {
            Some(error) => error.clone(),
            None => self.text.chars().take(SHOWN_BODY).collect(),
        };
        write!(
            f,
            "call {} attempt {} to {}: {} after {:.2?} (answered by {}, ran on {}): {shown}",
            self.call,
            self.number,
            self.target,
            self.outcome(),
            self.latency,
            self.instance.as_deref().unwrap_or("-"),
            self.executed_by.as_deref().unwrap_or("-"),
        )
    }
}

/// A fault injected into the deployment, and how long the attempts it met may take.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    /// A failure must be answered within the bound after this (or after its own start).
    pub began: Instant,
    /// A success may wait for this, then must come within the bound: NATS back, say, with the
    /// reply that waited for it.
    pub over: Instant,
}

impl Fault {
    /// A fault that every attempt must be answered within the bound of, successes too: a kill,
    /// or an outage the store must refuse work during.
    pub fn at(began: Instant) -> Fault {
        Fault { began, over: began }
    }

    /// A fault from `began` to `over`, whose end a success may wait for.
    pub fn lasting(began: Instant, over: Instant) -> Fault {
        Fault { began, over }
    }

    /// Whether `attempt` was in flight during the fault.
    fn met(&self, attempt: &Attempt) -> bool {
        attempt.started <= self.over && self.began < attempt.ended()
    }

    /// From when `attempt`, which met the fault, must be answered within the bound.
    fn answer_due_from(&self, attempt: &Attempt) -> Instant {
        let succeeded = attempt.status.is_some_and(|s| (200..300).contains(&s));
        let due = if succeeded { self.over } else { self.began };
        due.max(attempt.started)
    }
}

/// A load that runs until its plan's bounds, from tasks of its own.
pub struct Load {
    attempts: Arc<Mutex<Vec<Attempt>>>,
    clients: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `plan.clients` clients sending the calls `call(0)`, `call(1)`, ….
    pub fn start(plan: Plan, call: impl Fn(usize) -> Call + Send + Sync + 'static) -> Load {
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let plan = Arc::new(plan);
        let call = Arc::new(call);
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let clients = (0..plan.clients)
            .map(|_| {
                let (plan, call, next) = (plan.clone(), call.clone(), next.clone());
                let attempts = attempts.clone();
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::SeqCst);
                        if n >= plan.calls || start.elapsed() >= plan.duration {
                            return;
                        }
                        settle(&http, &plan, start, n, &call(n), &attempts).await;
                        tokio::time::sleep(plan.pace).await;
                    }
                })
            })
            .collect();
        Load { attempts, clients }
    }

    /// How many attempts so far are `which`.
    pub fn count(&self, which: impl Fn(&Attempt) -> bool) -> usize {
        lock(&self.attempts).iter().filter(|a| which(a)).count()
    }

    /// Waits (at most `within`) until some attempt is `which`: the load reached the state a
    /// fault is meant to meet.
    pub async fn wait_for(&self, what: &str, within: Duration, which: impl Fn(&Attempt) -> bool) {
        eventually(what, within, async || self.count(&which) > 0).await;
    }

    /// Waits until every client is done, and returns what they recorded.
    pub async fn finish(self) -> Record {
        for client in self.clients {
            if let Err(e) = client.await {
                panic!("a load client failed: {e}");
            }
        }
        let mut attempts = std::mem::take(&mut *lock(&self.attempts));
        attempts.sort_by_key(|a| (a.call, a.number));
        Record { attempts }
    }
}

/// Sends call `n` until an attempt settles it or the plan's retries are over.
async fn settle(
    http: &reqwest::Client,
    plan: &Plan,
    start: Instant,
    n: usize,
    call: &Call,
    attempts: &Mutex<Vec<Attempt>>,
) {
    for number in 1.. {
        let target = &plan.targets[(n + number as usize - 1) % plan.targets.len()];
        let attempt = send(http, target, call, plan.give_up_after, n, number).await;
        let again = (plan.unsettled)(&attempt);
        lock(attempts).push(attempt);
        if !again || start.elapsed() >= plan.duration + plan.retry_for {
            return;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// One attempt of `call` on `target`.
async fn send(
    http: &reqwest::Client,
    target: &str,
    call: &Call,
    give_up_after: Duration,
    n: usize,
    number: u32,
) -> Attempt {
    let mut request = http
        .request(call.method.clone(), format!("{target}{}", call.path))
        .header("content-type", "application/json")
        .body(call.body.to_string());
    if let Some(key) = &call.idempotency_key {
        request = request.header("idempotency-key", key);
    }
    if let Some(cookie) = &call.cookie {
        request = request.header("cookie", cookie);
    }
    let started = Instant::now();
    let answer = tokio::time::timeout(give_up_after, async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await?;
        Ok::<_, reqwest::Error>((status, headers, text))
    })
    .await;
    let latency = started.elapsed();
    let mut attempt = Attempt {
        call: n,
        number,
        idempotency_key: call.idempotency_key.clone(),
        target: target.to_owned(),
        started,
        latency,
        status: None,
        error: None,
        body: Value::Null,
        text: String::new(),
        instance: None,
        executed_by: None,
    };
    match answer {
        Ok(Ok((status, headers, text))) => {
            let header = |name: &str| {
                let value = headers.get(name)?.to_str().ok()?;
                Some(value.to_owned())
            };
            attempt.status = Some(status);
            attempt.body = serde_json::from_str(&text).unwrap_or(Value::Null);
            attempt.text = text;
            attempt.instance = header("x-cohort-instance");
            attempt.executed_by = header("x-cohort-executed-by");
        }
        Ok(Err(e)) => attempt.error = Some(format!("no HTTP answer: {e}")),
        Err(_) => attempt.error = Some(format!("no answer within {give_up_after:?}")),
    }
    attempt
}

/// Every attempt of a finished load, by call and attempt number.
pub struct Record {
    pub attempts: Vec<Attempt>,
}

impl Record {
    /// The last attempt of each call: how the call ended.
    pub fn outcomes(&self) -> Vec<&Attempt> {
        let mut last = BTreeMap::new();
        for attempt in &self.attempts {
            last.insert(attempt.call, attempt);
        }
        last.into_values().collect()
    }

    /// The attempts answered later than `within` after they started or, for those that met one
    /// of `faults`, after the moment that fault lets them wait for: a fault must be answered
    /// within that bound, never at a far deadline.
    pub fn slower_than(&self, within: Duration, faults: &[Fault]) -> Vec<&Attempt> {
        self.attempts
            .iter()
            .filter(|attempt| {
                let since = faults
                    .iter()
                    .filter(|fault| fault.met(attempt))
                    .map(|fault| fault.answer_due_from(attempt))
                    .max()
                    .unwrap_or(attempt.started);
                attempt.ended().duration_since(since) > within
            })
            .collect()
    }

    /// How many attempts were in flight at `moment`.
    pub fn in_flight_at(&self, moment: Instant) -> usize {
        self.attempts
            .iter()
            .filter(|attempt| (attempt.started..attempt.ended()).contains(&moment))
            .count()
    }

    /// The attempts that are not `expected`.
    pub fn unexpected(&self, expected: impl Fn(&Attempt) -> bool) -> Vec<&Attempt> {
        self.attempts
            .iter()
            .filter(|attempt| !expected(attempt))
            .collect()
    }

    /// One paragraph on the load: calls, attempts by outcome, where they ran, the slowest.
    pub fn summary(&self) -> String {
        let mut outcomes = BTreeMap::<String, usize>::new();
        let mut ran_on = BTreeMap::<&str, usize>::new();
        for attempt in &self.attempts {
            *outcomes.entry(attempt.outcome()).or_default() += 1;
            *ran_on
                .entry(attempt.executed_by.as_deref().unwrap_or("-"))
                .or_default() += 1;
        }
        let slowest = self.attempts.iter().map(|a| a.latency).max();
        format!(
            "{} calls, {} attempts; outcomes {outcomes:?}; ran on {ran_on:?}; slowest {slowest:.2?}",
            self.outcomes().len(),
            self.attempts.len(),
        )
    }
}

/// At most `shown` of `items`, one a line, and how many more there were.
pub fn listing<T: fmt::Display>(items: &[T], shown: usize) -> String {
    let mut text: String = items
        .iter()
        .take(shown)
        .map(|item| format!("\n    {item}"))
        .collect();
    if items.len() > shown {
        text.push_str(&format!("\n    … and {} more", items.len() - shown));
    }
    text
}
