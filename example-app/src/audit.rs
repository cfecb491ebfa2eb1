//! The audit: counts every order placed, exactly once however often its event is delivered, and
//! which instance consumed each `OrderPlaced`.

use std::collections::BTreeMap;

use cohort::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::orders::{OrderPlaced, orders_recorded};

#[derive(Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct AuditReport {
    /// Orders seen by the `count_order` subscription (each event by one instance, once).
    pub orders_seen: u64,
    /// Orders recorded by `place_order`: equal to `orders_seen` once every event is consumed.
    pub orders_recorded: u64,
    /// How many of them each instance consumed.
    pub by_instance: BTreeMap<String, u64>,
    /// Orders each instance heard of through the every-instance `hear_order` subscription.
    pub heard_by_instance: BTreeMap<String, u64>,
}

/// Counts an order, exactly once. Runs on one instance per event.
#[subscription(service = "audit")]
pub async fn count_order(ctx: Ctx, event: OrderPlaced) -> Result<(), Error> {
    let instance = ctx.instance_id().to_owned();
    ctx.transaction(async move |tx| {
        tx.add("orders_seen", 1);
        count_for(tx, "seen_by", &instance).await
    })
    .await?;
    tracing::info!(order = event.id, "order counted");
    Ok(())
}

/// Hears every order on every instance (a cache would be invalidated here), exactly once each.
#[subscription(service = "audit", every_instance)]
pub async fn hear_order(ctx: Ctx, _event: OrderPlaced) -> Result<(), Error> {
    let instance = ctx.instance_id().to_owned();
    ctx.transaction(async move |tx| count_for(tx, "heard_by", &instance).await)
        .await
}

/// Adds one to `{counter}:{instance}`, and lists the instance under `{counter}` the first time.
/// The list is read only to be extended: a unit conflicts with another only when both add a new
/// instance, not on every count.
async fn count_for(tx: &Tx, counter: &str, instance: &str) -> Result<(), Error> {
    tx.add(&format!("{counter}:{instance}"), 1);
    let mut instances: Vec<String> = tx.get(counter).await?.unwrap_or_default();
    if !instances.iter().any(|i| i == instance) {
        instances.push(instance.to_owned());
        tx.put(counter, &instances)?;
    }
    Ok(())
}

/// The audit so far.
#[command(service = "audit", version = 1)]
#[http(GET, "/audit")]
pub async fn audit_report(ctx: Ctx) -> Result<AuditReport, Error> {
    let state = ctx.state();
    Ok(AuditReport {
        orders_seen: state.get::<u64>("orders_seen").await?.unwrap_or(0),
        orders_recorded: ctx.call::<orders_recorded>(()).await?,
        by_instance: counts(&state, "seen_by").await?,
        heard_by_instance: counts(&state, "heard_by").await?,
    })
}

/// What the audit stood at, once a minute.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub orders_seen: u64,
    /// The fencing token of the run that took it: a later snapshot has a larger one.
    pub token: u64,
}

/// Once a minute, on one instance of the deployment: keeps the count of orders seen as the
/// latest snapshot. A snapshot is only written over by a later run's.
#[task(service = "audit", every = "1m")]
pub async fn take_snapshot(ctx: Ctx) -> Result<(), Error> {
    let state = ctx.state();
    let orders_seen = state.get::<u64>("orders_seen").await?.unwrap_or(0);
    let token = ctx.fencing_token().unwrap_or(0);
    let snapshot = Snapshot { orders_seen, token };
    state
        .update("snapshot", |last: Option<Snapshot>| match last {
            // A run that stalled past its lease must not overwrite its successor's snapshot.
            Some(last) if last.token > token => Ok(last),
            _ => Ok(snapshot.clone()),
        })
        .await?;
    Ok(())
}

/// Each listed instance's `{counter}:{instance}`.
async fn counts(state: &State, counter: &str) -> Result<BTreeMap<String, u64>, Error> {
    let mut counts = BTreeMap::new();
    for instance in state.get::<Vec<String>>(counter).await?.unwrap_or_default() {
        let count = state
            .get(&format!("{counter}:{instance}"))
            .await?
            .unwrap_or(0);
        counts.insert(instance, count);
    }
    Ok(counts)
}
