//! What the version drift tests share: a service's `$SRV.INFO` answer from one instance, as `nats
//! micro info` shows it, and waiting until an in-process instance has compared its commands and
//! events with the cluster's.

use std::time::Duration;

use bytes::Bytes;
use cohort::testing::{eventually, eventually_some};
use futures_util::StreamExt;
use serde_json::Value;

use crate::logs::CapturedLogs;

/// How long an instance may take to answer or to run its first check.
const PATIENCE: Duration = Duration::from_secs(10);

/// The `$SRV.INFO` answer of the service `service` of instance `id`.
pub async fn micro_info(nats: &async_nats::Client, service: &str, id: &str) -> Value {
    let what = format!("instance {id} answers $SRV.INFO.{service}");
    eventually_some(&what, PATIENCE, async || {
        let inbox = nats.new_inbox();
        let mut answers = nats.subscribe(inbox.clone()).await.ok()?;
        let asked = format!("$SRV.INFO.{service}");
        nats.publish_with_reply(asked, inbox, Bytes::new())
            .await
            .ok()?;
        let window = Duration::from_millis(500);
        while let Ok(Some(answer)) = tokio::time::timeout(window, answers.next()).await {
            let info: Value = serde_json::from_slice(&answer.payload).ok()?;
            if info["metadata"]["cohort.instance"] == id {
                return Some(info);
            }
        }
        None
    })
    .await
}

/// The events instance `id` announces (`cohort.events` of its `CohortEvents`), as JSON.
pub async fn announced_events(nats: &async_nats::Client, id: &str) -> Vec<Value> {
    let info = micro_info(nats, "CohortEvents", id).await;
    info["metadata"]["cohort.events"]
        .as_str()
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_else(|| panic!("cohort.events in {info}"))
}

/// Waits until the drift check of the in-process instance `id` has compared its table.
pub async fn drift_checked(logs: &CapturedLogs, id: &str) {
    let compared = format!("instance={id} ");
    eventually(
        &format!("{id} compares its commands and events"),
        PATIENCE,
        async || {
            logs.text().lines().any(|l| {
                l.contains("compared the commands and events with the cluster's")
                    && l.contains(&compared)
            })
        },
    )
    .await;
}
