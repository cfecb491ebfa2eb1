//! A load of orders on the example shop while a fault is injected, and what it must add up to:
//! every request answered within seconds, never at a far deadline, with the answers the fault
//! allows, and the books balanced exactly once it is over.

use std::time::{Duration, Instant};

use crate::Client;
use crate::books::{Books, orders, unsettled};
use crate::load::{Attempt, Fault, Load, Plan, Record, listing};
use crate::process::AppProcess;
use crate::servers::{NatsUrls, Servers};

/// How soon a request must be answered: from its start, or from the moment the fault it met lets
/// it wait for (see [`Fault`]).
pub const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// The SKUs of the load, each stocked far beyond what it can order.
pub const SKUS: [&str; 3] = ["bolt", "nut", "gear"];
pub const AMPLE: u64 = 1_000_000;
/// What an attempt may be answered.
pub struct Answers {
    pub what: &'static str,
    pub expected: fn(&Attempt) -> bool,
}

/// During a fault: the order, a fast 503, or, to a retry, a 409 saying that its key is still in use
/// by the attempt before.
pub const ORDER_OR_503: Answers = Answers {
    what: "201, 503, or a 409 to a retry whose key is in use",
    expected: |a| match a.status {
        Some(201 | 503) => true,
        Some(409) => a.number > 1 && a.code() != Some("insufficient_stock"),
        _ => false,
    },
};

/// Orders placed before a fault, so that it meets a load in full swing.
pub const WARM_UP: usize = 50;
/// A load of orders on `targets` for `duration`: eight clients, each placing an order as soon as
/// the last is answered, so that a fault always meets orders in flight; an attempt unanswered
/// after 5 s counts as lost (and is retried), and retries go on for 15 s after the load.
pub fn load_of_orders(books: &Books, targets: Vec<String>, duration: Duration, run: &str) -> Load {
    let plan = Plan {
        targets,
        clients: 8,
        calls: 10_000,
        duration,
        pace: Duration::ZERO,
        give_up_after: Duration::from_secs(5),
        unsettled,
        retry_for: Duration::from_secs(15),
    };
    Load::start(plan, orders(books, &SKUS, run))
}

/// Opens the books on `instance` with ample stock of every SKU.
pub async fn open_books<Nats: NatsUrls>(servers: &Servers<Nats>, instance: &AppProcess) -> Books {
    open_books_on(&servers.nats, instance).await
}

/// Opens the books on `instance`, whose events go through `nats`, with ample stock of every SKU.
pub async fn open_books_on(nats: &impl NatsUrls, instance: &AppProcess) -> Books {
    let stock = SKUS.map(|sku| (sku, AMPLE));
    Books::open(Client::new(instance.url()), nats.urls(), &stock).await
}

/// A load of orders on every instance, warmed up: the fault comes next.
pub async fn warm_load_on_all(
    books: &Books,
    instances: &[AppProcess],
    duration: Duration,
    run: &str,
) -> Load {
    let targets = instances.iter().map(AppProcess::url).collect();
    let load = load_of_orders(books, targets, duration, run);
    wait_for_warm_up(&load).await;
    load
}

/// Waits until the load has placed [`WARM_UP`] orders.
pub async fn wait_for_warm_up(load: &Load) {
    let what = format!("the load must place {WARM_UP} orders before the fault");
    let warm = async || load.count(|a| a.status == Some(201)) >= WARM_UP;
    cohort::testing::eventually(&what, Duration::from_secs(10), warm).await;
}

/// Fails with everything that went wrong at once: see [`failures`]. `scene` says what the
/// faults met.
pub async fn assert_in_time_and_balanced(
    books: &Books,
    record: &Record,
    faults: &[Fault],
    answers: &Answers,
    scene: &str,
) {
    let failures = failures(books, record, faults, answers).await;
    assert_none(&failures, record, scene);
}

/// Everything that went wrong: attempts answered later than [`ANSWER_WITHIN`] after their start
/// or the fault they met, attempts answered other than `answers`, and what does not add up in
/// the books.
pub async fn failures(
    books: &Books,
    record: &Record,
    faults: &[Fault],
    answers: &Answers,
) -> Vec<String> {
    let mut failures = Vec::new();
    let late: Vec<String> = record
        .slower_than(ANSWER_WITHIN, faults)
        .iter()
        .map(ToString::to_string)
        .collect();
    if !late.is_empty() {
        failures.push(format!(
            "{} attempts answered more than {ANSWER_WITHIN:?} after their start or the fault \
             they met:{}",
            late.len(),
            listing(&late, 5)
        ));
    }
    let unexpected: Vec<String> = record
        .unexpected(answers.expected)
        .iter()
        .map(ToString::to_string)
        .collect();
    if !unexpected.is_empty() {
        failures.push(format!(
            "{} attempts answered other than {}:{}",
            unexpected.len(),
            answers.what,
            listing(&unexpected, 5)
        ));
    }
    failures.extend(books.discrepancies(record).await);
    failures
}

/// Fails with `failures`, if there are any, and what the load met (`scene`) and did.
pub fn assert_none(failures: &[String], record: &Record, scene: &str) {
    assert!(
        failures.is_empty(),
        "\n{}\n\n{scene}; the load: {}",
        failures.join("\n"),
        record.summary()
    );
    // What the closing figures of a fault come from (`cargo test --test faults -- --nocapture`).
    eprintln!("{scene}; the load: {}", record.summary());
}

/// What a fault that began at `fault` met: `what`, with the attempts then in flight.
pub fn scene(what: &str, record: &Record, fault: Instant) -> String {
    format!(
        "{what} with {} attempts in flight",
        record.in_flight_at(fault)
    )
}
