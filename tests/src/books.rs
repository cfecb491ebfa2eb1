//! The example shop's books after a load of orders: the orders its clients were told of, and
//! whether the stock taken, the orders stored and the audit agree with them exactly.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep};

use crate::Client;
use crate::jetstream::EventStreams;
use crate::load::{Attempt, Call, Record, listing};

/// The durable consumer of the audit's `count_order` subscription, which makes `orders_seen`.
pub const AUDIT_CONSUMER: &str = "audit__count_order";
/// How long the audit may take to catch up with the orders once the load is over: events are
/// relayed and delivered asynchronously, and redelivered after a crash.
const AUDIT_PATIENCE: Duration = Duration::from_secs(20);
/// How long a read may take to succeed once the faults are over.
const READ_PATIENCE: Duration = Duration::from_secs(5);
/// The pause between two reads of what is still settling.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Orders read back at once.
const READS_AT_ONCE: usize = 16;
/// Examples a discrepancy shows.
const SHOWN: usize = 5;

/// The calls of a load of orders by the books' user: call `n` orders `n % 3 + 1` of the `n`th SKU
/// (round robin), under the idempotency key `{run}-{n}`.
pub fn orders(
    books: &Books,
    skus: &[&str],
    run: &str,
) -> impl Fn(usize) -> Call + Send + Sync + 'static {
    let skus: Vec<String> = skus.iter().map(|sku| (*sku).to_owned()).collect();
    let run = run.to_owned();
    let cookie = books.cookie();
    move |n| Call {
        method: Method::POST,
        path: "/orders".to_owned(),
        body: json!({"sku": skus[n % skus.len()], "qty": n % 3 + 1}),
        idempotency_key: Some(format!("{run}-{n}")),
        cookie: cookie.clone(),
    }
}

/// Whether an order's attempt left it unsettled: no answer or a server error, or a 409 other than
/// a lack of stock (another attempt with the same key still running). Sent again, its key makes
/// it the same order.
pub fn unsettled(attempt: &Attempt) -> bool {
    match attempt.status {
        None => true,
        Some(409) => attempt.code() != Some("insufficient_stock"),
        Some(status) => status >= 500,
    }
}

/// An order as the shop confirmed it (201) or stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Order {
    id: u64,
    sku: String,
    qty: u64,
}

impl Order {
    fn from_json(body: &Value) -> Option<Order> {
        Some(Order {
            id: body.get("id")?.as_u64()?,
            sku: body.get("sku")?.as_str()?.to_owned(),
            qty: body.get("qty")?.as_u64()?,
        })
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "order {} ({} × {})", self.id, self.qty, self.sku)
    }
}

/// The stock the shop started with, and the checks of what it holds after a load.
pub struct Books {
    client: Client,
    nats_url: String,
    stock: BTreeMap<String, u64>,
}

impl Books {
    /// Signs `client` in as the admin, sets the stock of each SKU through it (an instance that
    /// stays up) and keeps it as the opening balance; the orders of [`orders`] are the admin's
    /// too, so that the books can read them back. `nats_url` is the deployment's NATS, to see the
    /// audit catch up.
    pub async fn open(client: Client, nats_url: String, stock: &[(&str, u64)]) -> Books {
        client.sign_in_admin().await;
        for (sku, qty) in stock {
            let reply = client
                .put(&format!("/stock/{sku}"), json!({"qty": qty}))
                .await;
            assert_eq!(
                reply.status, 200,
                "setting the stock of {sku}: {}",
                reply.text
            );
        }
        let stock = stock
            .iter()
            .map(|(sku, qty)| ((*sku).to_owned(), *qty))
            .collect();
        Books {
            client,
            nats_url,
            stock,
        }
    }

    /// The session cookie of the books' user, who places the orders and reads them back.
    pub fn cookie(&self) -> Option<String> {
        self.client.cookie()
    }

    /// Everything that does not add up between what `record`'s clients were told and what the
    /// shop holds: each idempotency key confirmed as one order; each confirmed order stored as
    /// confirmed; the stock taken equal to the confirmed quantities; `orders_recorded` equal to
    /// the confirmed orders and, once the audit has caught up, `orders_seen` too. Empty when the
    /// books balance.
    pub async fn discrepancies(&self, record: &Record) -> Vec<String> {
        let mut found = Vec::new();
        let confirmed = confirmed_orders(record, &mut found);
        self.check_orders_stored(&confirmed, &mut found).await;
        self.check_stock(&confirmed, &mut found).await;
        let recorded = self
            .check_orders_recorded(confirmed.len(), &mut found)
            .await;
        let events = match recorded {
            Some(recorded) => (recorded, "orders recorded"),
            None => (confirmed.len() as u64, "orders confirmed"),
        };
        self.check_orders_seen(events, &mut found).await;
        found
    }

    /// Every confirmed order must be stored as it was confirmed.
    async fn check_orders_stored(&self, confirmed: &[Order], found: &mut Vec<String>) {
        let reads = futures_util::stream::iter(confirmed)
            .map(async |order| {
                let stored = self.read(&format!("/orders/{}", order.id)).await;
                match stored.map(|body| Order::from_json(&body)) {
                    Ok(Some(stored)) if stored == *order => None,
                    Ok(stored) => Some(format!("{order} was confirmed, the shop holds {stored:?}")),
                    Err(e) => Some(format!("{order} was confirmed, reading it failed: {e}")),
                }
            })
            .buffer_unordered(READS_AT_ONCE)
            .filter_map(std::future::ready)
            .collect::<Vec<String>>()
            .await;
        if !reads.is_empty() {
            found.push(format!(
                "{} of {} confirmed orders are not stored as confirmed:{}",
                reads.len(),
                confirmed.len(),
                listing(&reads, SHOWN)
            ));
        }
    }

    /// The stock taken of each SKU must be the quantity its confirmed orders hold.
    async fn check_stock(&self, confirmed: &[Order], found: &mut Vec<String>) {
        for (sku, opening) in &self.stock {
            let ordered: u64 = confirmed
                .iter()
                .filter(|order| order.sku == *sku)
                .map(|order| order.qty)
                .sum();
            let left = self.read(&format!("/stock/{sku}")).await.map(|body| {
                body.get("qty")
                    .and_then(Value::as_u64)
                    .ok_or(format!("no qty in {body}"))
            });
            match left {
                Ok(Ok(left)) => {
                    let taken = *opening as i64 - left as i64;
                    if taken != ordered as i64 {
                        found.push(format!(
                            "stock of {sku}: {taken} taken, the confirmed orders hold {ordered} \
                             ({:+})",
                            taken - ordered as i64
                        ));
                    }
                }
                Ok(Err(e)) | Err(e) => found.push(format!("stock of {sku}: {e}")),
            }
        }
    }

    /// `orders_recorded` must count the confirmed orders; returns it, when the audit has it.
    async fn check_orders_recorded(
        &self,
        confirmed: usize,
        found: &mut Vec<String>,
    ) -> Option<u64> {
        let audit = match self.read("/audit").await {
            Ok(audit) => audit,
            Err(e) => {
                found.push(format!("GET /audit: {e}"));
                return None;
            }
        };
        let Some(recorded) = audit.get("orders_recorded").and_then(Value::as_u64) else {
            found.push(format!("GET /audit has no orders_recorded: {audit}"));
            return None;
        };
        if recorded != confirmed as u64 {
            found.push(format!(
                "orders_recorded = {recorded}, {confirmed} orders confirmed ({:+})",
                recorded as i64 - confirmed as i64
            ));
        }
        Some(recorded)
    }

    /// Once every event is delivered and acknowledged (at most [`AUDIT_PATIENCE`]),
    /// `orders_seen` must be `events`, the number of orders it names.
    async fn check_orders_seen(&self, (events, orders): (u64, &str), found: &mut Vec<String>) {
        let streams = EventStreams::connect(&self.nats_url).await;
        let until = Instant::now() + AUDIT_PATIENCE;
        let (seen, progress) = loop {
            let seen = self
                .read("/audit")
                .await
                .map(|audit| audit["orders_seen"].as_u64());
            let progress = streams.progress(AUDIT_CONSUMER).await;
            let caught_up = matches!((&seen, &progress),
                (Ok(Some(seen)), Ok(progress)) if *seen >= events && progress.drained());
            if caught_up || Instant::now() >= until {
                break (seen, progress);
            }
            sleep(POLL_INTERVAL).await;
        };
        let progress = progress.map_or_else(|e| e, |p| p.to_string());
        let dead = streams
            .dead_letters()
            .await
            .map_or_else(|e| e, |n| n.to_string());
        match seen {
            Ok(Some(seen)) if seen == events => {}
            Ok(Some(seen)) => found.push(format!(
                "orders_seen = {seen}, {events} {orders} ({:+}); audit consumer: \
                 {progress}; dead letters: {dead}",
                seen as i64 - events as i64
            )),
            Ok(None) => found.push("GET /audit has no orders_seen".to_owned()),
            Err(e) => found.push(format!("GET /audit: {e}")),
        }
    }

    /// GETs `path` until it answers 200 or 404 (at most [`READ_PATIENCE`], while the deployment
    /// recovers), and returns its body when it is 200.
    async fn read(&self, path: &str) -> Result<Value, String> {
        let until = Instant::now() + READ_PATIENCE;
        loop {
            let reply = self.client.get(path).await;
            if reply.status == 200 {
                return Ok(reply.body);
            }
            if reply.status == 404 || Instant::now() >= until {
                return Err(format!(
                    "GET {path} answered {}: {}",
                    reply.status, reply.text
                ));
            }
            sleep(POLL_INTERVAL).await;
        }
    }
}

/// The order each idempotency key was confirmed as. A key confirmed as different orders, or an
/// order confirmed for different keys, or a key never confirmed, is a discrepancy.
fn confirmed_orders(record: &Record, found: &mut Vec<String>) -> Vec<Order> {
    let mut by_key = BTreeMap::<&str, Vec<Order>>::new();
    let mut calls_by_key = BTreeMap::<&str, Vec<&Attempt>>::new();
    for attempt in &record.attempts {
        let key = attempt.idempotency_key.as_deref().unwrap_or_default();
        calls_by_key.entry(key).or_default().push(attempt);
        if attempt.status == Some(201) {
            let order = Order::from_json(&attempt.body);
            by_key.entry(key).or_default().extend(order);
        }
    }
    let never: Vec<String> = calls_by_key
        .iter()
        .filter(|(key, _)| !by_key.contains_key(*key))
        .filter_map(|(_, attempts)| attempts.last().map(|last| last.to_string()))
        .collect();
    if !never.is_empty() {
        found.push(format!(
            "{} orders never confirmed (their last attempt shown):{}",
            never.len(),
            listing(&never, SHOWN)
        ));
    }
    let mut confirmed = Vec::new();
    let mut split = Vec::new();
    for (key, mut orders) in by_key {
        orders.sort_by_key(|order| order.id);
        orders.dedup();
        if orders.len() > 1 {
            let ids: Vec<u64> = orders.iter().map(|o| o.id).collect();
            split.push(format!(
                "key {key} confirmed as {} orders: {ids:?}",
                ids.len()
            ));
        }
        confirmed.extend(orders.into_iter().next());
    }
    if !split.is_empty() {
        found.push(format!(
            "{} idempotency keys confirmed as several orders:{}",
            split.len(),
            listing(&split, SHOWN)
        ));
    }
    let mut ids: Vec<u64> = confirmed.iter().map(|o| o.id).collect();
    ids.sort_unstable();
    let shared: Vec<u64> = ids
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    if !shared.is_empty() {
        found.push(format!(
            "{} order ids confirmed for different keys: {shared:?}",
            shared.len()
        ));
    }
    confirmed
}
