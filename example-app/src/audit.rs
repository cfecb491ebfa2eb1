//! The audit: counts every order placed, and which instance consumed each `OrderPlaced`.

use std::collections::BTreeMap;

use cohort::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::orders::OrderPlaced;

#[derive(Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct AuditReport {
    /// Orders seen by the `count_order` subscription (each event by one instance).
    pub orders_seen: u64,
    /// How many of them each instance consumed.
    pub by_instance: BTreeMap<String, u64>,
    /// Orders each instance heard of through the every-instance `hear_order` subscription.
    pub heard_by_instance: BTreeMap<String, u64>,
}

/// Counts an order. Runs on one instance per event.
#[subscription(service = "audit")]
pub async fn count_order(ctx: Ctx, _event: OrderPlaced) -> Result<(), Error> {
    let state = ctx.state();
    let instance = ctx.instance_id().to_owned();
    state
        .update::<BTreeMap<String, u64>, _>("by_instance", |counts| {
            let mut counts = counts.unwrap_or_default();
            *counts.entry(instance.clone()).or_default() += 1;
            Ok(counts)
        })
        .await?;
    state.increment("orders_seen", 1).await?;
    Ok(())
}

/// Hears every order on every instance (a cache would be invalidated here).
#[subscription(service = "audit", every_instance)]
pub async fn hear_order(ctx: Ctx, _event: OrderPlaced) -> Result<(), Error> {
    let key = format!("heard:{}", ctx.instance_id());
    ctx.state().increment(&key, 1).await?;
    ctx.state()
        .update::<Vec<String>, _>("heard_instances", |instances| {
            let mut instances = instances.unwrap_or_default();
            if !instances.iter().any(|i| i == ctx.instance_id()) {
                instances.push(ctx.instance_id().to_owned());
            }
            Ok(instances)
        })
        .await?;
    Ok(())
}

/// The audit so far.
#[command(service = "audit", version = 1)]
#[http(GET, "/audit")]
pub async fn audit_report(ctx: Ctx) -> Result<AuditReport, Error> {
    let state = ctx.state();
    let mut heard_by_instance = BTreeMap::new();
    for instance in state
        .get::<Vec<String>>("heard_instances")
        .await?
        .unwrap_or_default()
    {
        let heard = state
            .get::<u64>(&format!("heard:{instance}"))
            .await?
            .unwrap_or(0);
        heard_by_instance.insert(instance, heard);
    }
    Ok(AuditReport {
        orders_seen: state.get::<u64>("orders_seen").await?.unwrap_or(0),
        by_instance: state.get("by_instance").await?.unwrap_or_default(),
        heard_by_instance,
    })
}
