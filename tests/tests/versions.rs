//! Versions side by side, and version drift: two builds serving `pricing.v1.quote` through a
//! rolling deploy that moves `POST /quote` to `pricing.v2.quote`, and an instance that finds
//! another schema of a command or an event, and a command nobody serves, in its cluster.

#[path = "../src/bin/quote-v1/quote.rs"]
mod quote;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cohort::prelude::*;
use cohort::testing::{eventually, eventually_some};
use cohort::{App, Config, Running};
use cohort_tests::drift::{announced_events, drift_checked};
use cohort_tests::logs::CapturedLogs;
use cohort_tests::process::AppProcess;
use cohort_tests::servers::Servers;
use cohort_tests::{ANY_LOOPBACK_PORT, Client, config_from};
use quote::{PriceV1, QuoteV1, price_v1};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Version 1, kept for the callers that still send it; the route moved to version 2.
#[command(service = "pricing", version = 1, name = "quote")]
async fn quote_v1(ctx: Ctx, input: QuoteV1) -> Result<PriceV1, Error> {
    Ok(price_v1(&ctx, &input))
}

/// What version 2 takes: the country decides the tax.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct QuoteV2 {
    cents: u64,
    country: String,
}

/// What version 2 answers.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct PriceV2 {
    total_cents: u64,
    tax_cents: u64,
    instance: String,
}

/// Version 2: 19 % in Germany, 20 % elsewhere.
#[command(service = "pricing", version = 2, name = "quote")]
#[http(POST, "/quote")]
async fn quote_v2(ctx: Ctx, input: QuoteV2) -> Result<PriceV2, Error> {
    let rate = if input.country == "DE" { 19 } else { 20 };
    let tax_cents = input.cents * rate / 100;
    Ok(PriceV2 {
        total_cents: input.cents + tax_cents,
        tax_cents,
        instance: ctx.instance_id().to_owned(),
    })
}

/// A command of another service, which the drift test's instance does not serve.
#[command(service = "billing")]
async fn charge(ctx: Ctx, input: QuoteV1) -> Result<PriceV1, Error> {
    Ok(price_v1(&ctx, &input))
}

/// A price that changed: its schema is compared (`JsonSchema`).
#[derive(Debug, Serialize, Deserialize, JsonSchema, Event)]
struct PriceChanged {
    sku: String,
    cents: u64,
}

#[subscription(service = "pricing")]
async fn track_price(_ctx: Ctx, _event: PriceChanged) -> Result<(), Error> {
    Ok(())
}

/// A quote that was given, which no subscription of this build consumes.
#[derive(Debug, Serialize, Deserialize, JsonSchema, Event)]
struct QuoteGiven {
    cents: u64,
}

/// A price someone looked at: no `JsonSchema`, so its schema is not compared.
#[derive(Debug, Serialize, Deserialize, Event)]
struct PriceSeen {
    sku: String,
}

#[subscription(service = "pricing")]
async fn note_price(_ctx: Ctx, _event: PriceSeen) -> Result<(), Error> {
    Ok(())
}

/// How long an instance may take to find what it is looking for.
const PATIENCE: Duration = Duration::from_secs(10);

/// Starts this binary's app (the new build) as instance `id` of the deployment on `servers`.
async fn start_new_build(
    servers: &Servers,
    id: &str,
    configure: impl FnOnce(&mut Config),
) -> Running {
    let mut config = config_from(&servers.env());
    config.instance_id = id.to_owned();
    config.http_addr = ANY_LOOPBACK_PORT;
    configure(&mut config);
    App::with_config(config)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{id} starts: {e}"))
}

fn http(running: &Running) -> Client {
    let addr = running.http_addr().expect("the instance serves HTTP");
    Client::new(format!("http://{addr}"))
}

#[tokio::test]
async fn another_schema_and_a_command_nobody_serves_are_reported_not_fatal() {
    let (logs, _guard) = CapturedLogs::start();
    let servers = Servers::start().await;
    // An old build of `pricing`, announced by a bare micro service with another schema hash.
    let nats = async_nats::connect(servers.nats.url()).await.expect("NATS");
    let old = async_nats::service::ServiceExt::service_builder(&nats)
        .metadata(HashMap::from([("cohort.instance".into(), "old".into())]))
        .start("pricing", "1.0.0")
        .await
        .expect("the micro service starts");
    let _endpoint = old
        .endpoint_builder()
        .name("quote")
        .metadata(HashMap::from([(
            "cohort.schema".into(),
            "0123456789abcdef".into(),
        )]))
        .add("cohort.cmd.pricing.v1.quote")
        .await
        .expect("the endpoint is announced");

    let running = start_new_build(&servers, "new", |c| {
        c.services = Some(vec!["pricing".to_owned()]);
        c.dashboard = true;
    })
    .await;
    drift_checked(&logs, "new").await;

    let client = http(&running);
    let ready = client.get("/readyz").await;
    assert_eq!(ready.status, 200, "drift is a warning: {}", ready.text);
    let warnings: Vec<&str> = ready.body["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("warnings in {}", ready.text))
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    let ours = warnings
        .iter()
        .find(|w| w.starts_with("schema drift: `pricing.v1.quote` has schema 0123456789abcdef on instance `old` but "))
        .unwrap_or_else(|| panic!("the schema drift in {warnings:?}"));
    assert!(ours.ends_with(" on instance `new`"), "{ours}");
    let missing =
        "missing command: no instance serves `billing.v1.charge`, which instance `new` can call";
    assert!(warnings.contains(&missing), "{warnings:?}");
    assert!(
        !warnings.iter().any(|w| w.contains("pricing.v2.quote")),
        "only the old build lacks v2, and it does not call it: {warnings:?}"
    );

    let dashboard = client.get("/_cohort/data").await;
    assert_eq!(
        dashboard.body["drift"], ready.body["warnings"],
        "{}",
        dashboard.text
    );

    let metrics = client.get("/metrics").await.text;
    for series in [
        r#"cohort_schema_drift{command="pricing.v1.quote",kind="schema"} 1"#,
        r#"cohort_schema_drift{command="billing.v1.charge",kind="missing"} 1"#,
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }

    let log = logs.text();
    let warned: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(
        warned
            .iter()
            .filter(|l| l.contains("schema drift: `pricing.v1.quote`")
                && l.contains("`old`")
                && l.contains("`new`"))
            .count(),
        1,
        "{warned:#?}"
    );
    assert_eq!(
        warned.iter().filter(|l| l.contains(missing)).count(),
        1,
        "{warned:#?}"
    );
    running.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn an_event_with_another_schema_where_one_side_consumes_it_is_reported() {
    let (logs, _guard) = CapturedLogs::start();
    let servers = Servers::start().await;
    // An old build, announced like Cohort does: it emits `price_changed` with another schema,
    // consumes `quote_given` with another, and `price_seen`, whose schema this build does not know.
    let old_events = json!([
        {"subject": "cohort.evt.*.price_changed", "schema": "0123456789abcdef"},
        {"subject": "cohort.evt.*.quote_given", "schema": "fedcba9876543210",
         "subscriptions": ["billing.invoice"]},
        {"subject": "cohort.evt.*.price_seen", "schema": "00000000ffffffff",
         "subscriptions": ["audit.log"]},
    ]);
    let nats = async_nats::connect(servers.nats.url()).await.expect("NATS");
    let _old = async_nats::service::ServiceExt::service_builder(&nats)
        .metadata(HashMap::from([
            ("cohort.instance".into(), "old".into()),
            ("cohort.events".into(), old_events.to_string()),
        ]))
        .start("CohortEvents", "1.0.0")
        .await
        .expect("the micro service starts");

    // Every service of the binary, so that no command is missing.
    let running = start_new_build(&servers, "new", |c| c.dashboard = true).await;
    drift_checked(&logs, "new").await;

    let announced = announced_events(&nats, "new").await;
    let entry = |event: &str| {
        let subject = format!("cohort.evt.*.{event}");
        let mut of_event = announced.iter().filter(|e| e["subject"] == subject);
        let entry = of_event.next().cloned();
        assert_eq!(of_event.next(), None, "{event} once in {announced:?}");
        entry
    };
    assert_eq!(
        entry("price_seen"),
        None,
        "an event without a schema is not announced"
    );
    let hash_of = |event: &str| {
        let entry = entry(event).unwrap_or_else(|| panic!("{event} in {announced:?}"));
        let hash = entry["schema"].as_str().unwrap_or_default().to_owned();
        assert!(
            hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{entry}"
        );
        (entry, hash)
    };
    let ((changed_entry, changed), (given_entry, given)) =
        (hash_of("price_changed"), hash_of("quote_given"));
    assert_eq!(
        changed_entry["subscriptions"],
        json!(["pricing.track_price"])
    );
    assert_eq!(
        given_entry["subscriptions"],
        json!([]),
        "a type nothing here consumes"
    );

    let client = http(&running);
    let ready = client.get("/readyz").await;
    assert_eq!(ready.status, 200, "drift is a warning: {}", ready.text);
    let consumed_here = format!(
        "schema drift: event `price_changed` has schema 0123456789abcdef on instance `old` \
         (producer) but {changed} on instance `new` (subscription `pricing.track_price`)"
    );
    let consumed_there = format!(
        "schema drift: event `quote_given` has schema fedcba9876543210 on instance `old` \
         (subscription `billing.invoice`) but {given} on instance `new` (producer)"
    );
    assert_eq!(
        ready.body,
        json!({"status": "ok", "warnings": [&consumed_here, &consumed_there]}),
        "{}",
        ready.text
    );
    let dashboard = client.get("/_cohort/data").await;
    assert_eq!(dashboard.body["drift"], ready.body["warnings"]);

    let metrics = client.get("/metrics").await.text;
    let mut series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("cohort_schema_drift{"))
        .collect();
    series.sort_unstable();
    assert_eq!(
        series,
        [
            r#"cohort_schema_drift{event="price_changed",kind="event"} 1"#,
            r#"cohort_schema_drift{event="quote_given",kind="event"} 1"#,
        ]
    );

    let log = logs.text();
    let warned: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    for finding in [&consumed_here, &consumed_there] {
        let times = warned
            .iter()
            .filter(|l| l.contains(finding.as_str()))
            .count();
        assert_eq!(times, 1, "{finding} in {warned:#?}");
    }
    assert!(
        warned
            .iter()
            .any(|l| l.contains(r#"event="price_changed" kind="event""#)),
        "{warned:#?}"
    );
    running.shutdown().await.expect("shuts down");
}

/// A v1 caller's outcome: which instance ran it, or the error.
type Outcome = Result<String, String>;

#[tokio::test]
async fn a_rolling_deploy_serves_v1_throughout_and_moves_the_route_to_v2() {
    let (logs, _guard) = CapturedLogs::start();
    let servers = Servers::start().await;
    let binary = std::path::PathBuf::from(env!("CARGO_BIN_EXE_quote-v1"));
    let mut old = AppProcess::start_binary(binary, "old", true, &servers.env()).await;
    let old_route = Client::new(old.url());
    let before = old_route.post("/quote", json!({"cents": 1000})).await;
    assert_eq!(before.status, 200, "{}", before.text);
    assert_eq!(before.body, json!({"total_cents": 1200, "instance": "old"}));

    let new = Arc::new(start_new_build(&servers, "new", |_| {}).await);
    drift_checked(&logs, "new").await;
    let ready = http(&new).get("/readyz").await;
    assert_eq!(
        ready.text, r#"{"status":"ok"}"#,
        "both builds give v1 the same schema hash, and nothing is missing"
    );

    // A caller of v1 that keeps calling through the whole deploy.
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let caller = tokio::spawn({
        let (new, outcomes, stop) = (new.clone(), outcomes.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let price = new.call::<quote_v1>(QuoteV1 { cents: 500 }).await;
                let outcome = price
                    .map(|p| {
                        assert_eq!(p.total_cents, 600);
                        p.instance
                    })
                    .map_err(|e| e.to_string());
                cohort::testing::lock(&outcomes).push(outcome);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let ran_on = |id: &str| {
        let outcomes = outcomes.clone();
        let id = id.to_owned();
        move || {
            cohort::testing::lock(&outcomes)
                .iter()
                .any(|o| o.as_deref() == Ok(&id))
        }
    };
    let (on_old, on_new) = (ran_on("old"), ran_on("new"));
    eventually("v1 runs on both builds", PATIENCE, async || {
        on_old() && on_new()
    })
    .await;

    // The load balancer sends `POST /quote` to the new build: version 2 answers it.
    let v2 = http(&new)
        .post("/quote", json!({"cents": 1000, "country": "DE"}))
        .await;
    assert_eq!(v2.status, 200, "{}", v2.text);
    assert_eq!(
        v2.body,
        json!({"total_cents": 1190, "tax_cents": 190, "instance": "new"})
    );

    old.signal("TERM").await;
    assert_eq!(
        old.wait().await,
        Some(0),
        "the old build shuts down cleanly"
    );
    let retired = cohort::testing::lock(&outcomes).len();
    let after = eventually_some("v1 calls after the old build left", PATIENCE, async || {
        let outcomes = cohort::testing::lock(&outcomes);
        (outcomes.len() >= retired + 20).then(|| outcomes[retired..].to_vec())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    caller.await.expect("the caller ends");

    let outcomes = cohort::testing::lock(&outcomes).clone();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.is_err()).collect();
    assert!(failed.is_empty(), "every v1 call succeeds: {failed:?}");
    assert!(
        after.iter().all(|o| o.as_deref() == Ok("new")),
        "once the old build is gone, the new one runs v1: {after:?}"
    );
    let new = Arc::into_inner(new).expect("the caller let go of the instance");
    new.shutdown().await.expect("shuts down");
}
