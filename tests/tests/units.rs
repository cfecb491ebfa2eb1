//! Units of work: writes and events that commit together or not at all, retried on conflicts,
//! applied once per event, and published even when their writer dies before it could.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cohort::broker::MemoryBroker;
use cohort::prelude::*;
use cohort::state::MemoryStore;
use cohort::state::spi::{Commit, OutboxEvent, Outcome, StateStore};
use cohort::testing::{Cluster, eventually};
use cohort::{App, Running};
use cohort_tests::{Client, Nothing, start_embedded};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A count of the units tests, bumped by a read-modify-write unit (which conflicts under load).
#[command(service = "units")]
async fn bump(ctx: Ctx, _input: Nothing) -> Result<u64, Error> {
    ctx.transaction(async move |tx| {
        let next = tx.get::<u64>("bumps").await?.unwrap_or(0) + 1;
        tx.put("bumps", &next)?;
        Ok(next)
    })
    .await
}

/// Written and announced in a unit that then fails: nothing of it may remain.
#[command(service = "units")]
async fn write_then_fail(ctx: Ctx, _input: Nothing) -> Result<(), Error> {
    ctx.transaction(async move |tx| {
        tx.put("ghost", &1)?;
        tx.emit(&Noted { n: 1 })?;
        Err::<(), _>(Error::conflict("changed my mind"))
    })
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct Noted {
    n: u64,
}

/// The `n` of the event whose first delivery fails after its unit committed.
const LOST_ACK: u64 = 5;
/// Deliveries of that event, successful or not.
static DELIVERIES: AtomicUsize = AtomicUsize::new(0);

/// Counts each `Noted` in a unit. The first delivery of `LOST_ACK` then fails, as if its ack were
/// lost: the redelivery must find the unit applied and not count again.
#[subscription(service = "units")]
async fn note_once(ctx: Ctx, event: Noted) -> Result<(), Error> {
    ctx.transaction(async move |tx| {
        tx.add("noted", i64::try_from(event.n).unwrap_or(0));
        Ok(())
    })
    .await?;
    if event.n == LOST_ACK && DELIVERIES.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(Error::unavailable("the ack is lost"));
    }
    Ok(())
}

async fn noted(running: &Running) -> u64 {
    running
        .call::<bumps_and_notes>(Nothing {})
        .await
        .expect("read")
        .1
}

/// The counters these tests write.
#[command(service = "units")]
async fn bumps_and_notes(ctx: Ctx, _input: Nothing) -> Result<(u64, u64), Error> {
    let state = ctx.state();
    let bumps = state.get("bumps").await?.unwrap_or(0);
    let noted = state.get("noted").await?.unwrap_or(0);
    Ok((bumps, noted))
}

#[derive(Debug, Deserialize, Serialize, JsonSchema)]
struct Emit {
    n: u64,
}

/// Emits `Noted` in a unit.
#[command(service = "units")]
async fn emit_noted(ctx: Ctx, input: Emit) -> Result<(), Error> {
    ctx.transaction(async move |tx| tx.emit(&Noted { n: input.n }))
        .await
}

#[tokio::test]
async fn conflicting_units_are_retried_until_each_applies_once() {
    let running = start_embedded(|_| {}).await;
    let running = Arc::new(running);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let running = running.clone();
            tokio::spawn(async move { running.call::<bump>(Nothing {}).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(
            task.await
                .expect("joined")
                .expect("a bump commits, however contended"),
        );
    }
    results.sort_unstable();
    assert_eq!(
        results,
        (1..=20).collect::<Vec<u64>>(),
        "each unit saw the one before"
    );
}

#[tokio::test]
async fn a_unit_that_fails_writes_and_emits_nothing() {
    let store = Arc::new(MemoryStore::new());
    let running = App::default()
        .http_addr(None)
        .store(store.clone())
        .start()
        .await
        .expect("starts");
    let err = running
        .call::<write_then_fail>(Nothing {})
        .await
        .expect_err("the unit fails");
    assert_eq!(err.code(), "conflict");
    assert_eq!(
        store.get("{cohort:units}:ghost").await.expect("get"),
        None,
        "nothing written"
    );
    let outbox = store
        .outbox("{cohort:units}:outbox", Duration::ZERO, 10)
        .await
        .expect("outbox");
    assert!(outbox.is_empty(), "nothing emitted: {outbox:?}");
}

/// An embedded instance that redelivers a failed event after 20 ms.
async fn redelivering_quickly() -> Running {
    App::default()
        .http_addr(None)
        .configure(|c| c.event_backoff = vec![Duration::from_millis(20)])
        .start()
        .await
        .expect("starts")
}

#[tokio::test]
async fn a_redelivered_event_does_not_apply_its_unit_twice() {
    let running = redelivering_quickly().await;
    running
        .call::<emit_noted>(Emit { n: LOST_ACK })
        .await
        .expect("emitted");
    eventually(
        "the event is delivered twice",
        Duration::from_secs(10),
        async || DELIVERIES.load(Ordering::SeqCst) >= 2,
    )
    .await;
    assert_eq!(
        noted(&running).await,
        LOST_ACK,
        "counted once, though delivered twice"
    );
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
struct Claimed {
    n: u64,
}

/// Deliveries of `Claimed`, and those that succeeded.
static CLAIM_DELIVERIES: AtomicUsize = AtomicUsize::new(0);
static CLAIMS_DONE: AtomicUsize = AtomicUsize::new(0);

/// Claims `claim:{n}` in a unit whose work refuses a claim already taken, so that it fails when
/// it runs again. The first delivery fails after its commit, as if its ack were lost: the
/// redelivery must get the unit's first result, not the refusal.
#[subscription(service = "units")]
async fn claim_once(ctx: Ctx, event: Claimed) -> Result<(), Error> {
    let first = CLAIM_DELIVERIES.fetch_add(1, Ordering::SeqCst) == 0;
    let key = format!("claim:{}", event.n);
    let claimed = ctx
        .transaction(async move |tx| {
            if tx.get::<u64>(&key).await?.is_some() {
                return Err(Error::conflict("already claimed"));
            }
            tx.put(&key, &event.n)?;
            Ok(event.n)
        })
        .await?;
    if first {
        return Err(Error::unavailable("the ack is lost"));
    }
    assert_eq!(claimed, event.n, "the first result");
    CLAIMS_DONE.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// Emits `Claimed`.
#[command(service = "units")]
async fn emit_claimed(ctx: Ctx, input: Emit) -> Result<(), Error> {
    ctx.emit(&Claimed { n: input.n }).await
}

#[tokio::test]
async fn a_redelivered_event_gets_its_first_result_though_its_work_now_fails() {
    let running = redelivering_quickly().await;
    running
        .call::<emit_claimed>(Emit { n: 9 })
        .await
        .expect("emitted");
    eventually(
        "the redelivery succeeds",
        Duration::from_secs(10),
        async || CLAIMS_DONE.load(Ordering::SeqCst) == 1,
    )
    .await;
    assert_eq!(
        CLAIM_DELIVERIES.load(Ordering::SeqCst),
        2,
        "delivered twice, then acknowledged"
    );
}

/// An instance of the units service on `store`, with its own in-process broker.
async fn start_on(store: Arc<dyn StateStore>) -> Running {
    App::default()
        .http_addr(None)
        .broker(Arc::new(MemoryBroker::new()))
        .store(store)
        .start()
        .await
        .expect("starts")
}

/// What writers that died right after their commit leave behind: `Noted { n }` events with these
/// ids, only in the outbox.
async fn leave_orphans(store: &dyn StateStore, ids: impl Iterator<Item = String>, n: u64) {
    let events = ids
        .map(|id| {
            let mut message = cohort::broker::spi::Message::new(format!(r#"{{"n":{n}}}"#));
            message
                .meta
                .set_header(cohort::broker::spi::header::MESSAGE_ID, &id);
            let subject = "cohort.evt.units.noted".to_owned();
            OutboxEvent { subject, message }
        })
        .collect();
    let mut orphans = Commit::default();
    orphans.outbox = "{cohort:units}:outbox".to_owned();
    orphans.events = events;
    assert!(matches!(
        store.commit(orphans).await.expect("commit"),
        Outcome::Committed(_)
    ));
}

#[tokio::test]
async fn an_event_its_writer_never_published_is_relayed_by_another_instance() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let running = start_on(store.clone()).await;
    leave_orphans(&*store, std::iter::once("orphan-1".to_owned()), 7).await;
    eventually(
        "the orphan is relayed and counted",
        Duration::from_secs(10),
        async || noted(&running).await == 7,
    )
    .await;
}

/// Waits at most `within` until the outbox of the units service is empty, emptied `by` whom.
async fn outbox_emptied(store: &dyn StateStore, by: &str, within: Duration) {
    let what = format!("the outbox is emptied {by}");
    eventually(&what, within, async || {
        let left = store.outbox("{cohort:units}:outbox", Duration::ZERO, 1);
        left.await.expect("outbox").is_empty()
    })
    .await;
}

/// The instance that published a unit's events removes them from the outbox itself, well before
/// the relay would take them for orphans (at 2 s).
#[tokio::test]
async fn published_events_leave_the_outbox_without_the_relay() {
    const EMITS: u64 = 50;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let running = Arc::new(start_on(store.clone()).await);
    let emits: Vec<_> = (0..EMITS)
        .map(|_| {
            let running = running.clone();
            tokio::spawn(async move { running.call::<emit_noted>(Emit { n: 1 }).await })
        })
        .collect();
    for emit in emits {
        emit.await.expect("joined").expect("emitted");
    }
    outbox_emptied(&*store, "by the publisher", Duration::from_secs(1)).await;
    eventually(
        "each event is counted",
        Duration::from_secs(10),
        async || noted(&running).await == EMITS,
    )
    .await;
}

#[tokio::test]
async fn a_backlog_of_several_relay_batches_is_relayed_whole_and_counted_once() {
    const BACKLOG: u64 = 700;
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let running = start_on(store.clone()).await;
    leave_orphans(&*store, (0..BACKLOG).map(|i| format!("orphan-{i}")), 1).await;
    eventually(
        "the backlog is relayed and counted",
        Duration::from_secs(20),
        async || noted(&running).await == BACKLOG,
    )
    .await;
    outbox_emptied(&*store, "by the relay", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(noted(&running).await, BACKLOG, "each event counted once");
}

#[tokio::test]
async fn sixty_four_clients_on_one_hot_sku_get_no_conflict() {
    let cluster = Cluster::start(2).await;
    let admin = Client::new(cluster.http(0));
    admin.sign_in_admin().await;
    let clients: Vec<Client> = (0..2).map(|i| admin.with_base(cluster.http(i))).collect();
    let stocked = clients[0].put("/stock/hot", json!({"qty": 10_000})).await;
    assert_eq!(stocked.status, 200, "{}", stocked.text);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let client = clients[i % 2].with_base(cluster.http(i % 2));
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..5 {
                    let reply = client
                        .post("/orders", json!({"sku": "hot", "qty": 1}))
                        .await;
                    statuses.push((reply.status, reply.body["code"].clone()));
                }
                statuses
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        for (status, code) in task.await.expect("joined") {
            assert_eq!(
                status, 201,
                "every order on a hot SKU with ample stock succeeds: {code}"
            );
            created += 1;
        }
    }
    assert_eq!(created, 320);
    let left = clients[1].get("/stock/hot").await;
    assert_eq!(
        left.body["qty"],
        10_000 - 320,
        "exactly what was ordered was taken"
    );
}
