//! Observability of real example-app processes: one request across two instances is one trace
//! exported over OTLP with the right parent/child links, the log lines written inside a handler
//! carry its trace id (text and JSON), and a lost NATS or Redis connection is logged once when
//! lost and once when back.

use std::collections::BTreeMap;
use std::time::Duration;

use cohort::testing::{eventually, eventually_some};
use cohort_tests::Client;
use cohort_tests::otlp::{OtlpReceiver, ReceivedSpan};
use cohort_tests::process::AppProcess;
use cohort_tests::servers::Servers;
use serde_json::{Value, json};

/// OTLP's span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

/// The environment of a process of `servers` with `extra` settings, which replace the defaults.
fn env_with(servers: &Servers, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env: Vec<_> = servers
        .env()
        .into_iter()
        .filter(|(name, _)| extra.iter().all(|(set, _)| set != name))
        .collect();
    env.extend(extra.iter().cloned());
    env
}

#[tokio::test]
async fn one_request_across_two_instances_is_one_exported_trace() {
    let servers = Servers::start().await;
    let otlp = OtlpReceiver::start().await;
    let export = |services: &str, format: &str| {
        env_with(
            &servers,
            &[
                ("COHORT_SERVICES", services.to_owned()),
                (
                    "COHORT_LOG",
                    "warn,cohort::app=info,example_app=info".to_owned(),
                ),
                ("COHORT_LOG_FORMAT", format.to_owned()),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint.clone()),
                ("OTEL_SERVICE_NAME", "shop".to_owned()),
                ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
            ],
        )
    };
    // `ta` takes the HTTP request and consumes the event; `tb` alone runs the orders.
    let a = AppProcess::start("ta", true, &export("accounts,audit", "text")).await;
    let b = AppProcess::start("tb", false, &export("orders", "json")).await;
    let client = Client::new(a.url());
    client.sign_in_admin().await;
    let stock = client.put("/stock/sku-t", json!({"qty": 5})).await;
    assert_eq!(stock.status, 200, "{}", stock.text);

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    place_traced_order(&client, &traceparent).await;

    let expected = [
        "POST /orders",
        "call orders.place_order",
        "orders.place_order",
        "emit orders.order_placed",
        "audit.count_order",
        "audit.hear_order",
    ];
    let exported = async || {
        let spans = otlp.trace(trace_id);
        (spans.len() >= expected.len()).then_some(spans)
    };
    let whole = "the whole trace is exported";
    let spans = eventually_some(whole, Duration::from_secs(15), exported).await;
    let by_name: BTreeMap<&str, &ReceivedSpan> = spans
        .iter()
        .map(|span| (span.name.as_str(), span))
        .collect();
    assert_eq!(
        by_name.keys().copied().collect::<Vec<_>>(),
        {
            let mut names = expected.to_vec();
            names.sort();
            names
        },
        "{spans:#?}"
    );
    assert_eq!(spans.len(), expected.len(), "one span each: {spans:#?}");
    let span = |name: &str| by_name[name];
    let (http, call, command) = (
        span("POST /orders"),
        span("call orders.place_order"),
        span("orders.place_order"),
    );
    // The links: caller -> HTTP server span -> its call -> the command's run -> the event it
    // emits -> each delivery.
    assert_eq!(http.parent_span_id, caller_span);
    assert_eq!(call.parent_span_id, http.span_id);
    assert_eq!(command.parent_span_id, call.span_id);
    let emit = span("emit orders.order_placed");
    assert_eq!(emit.parent_span_id, command.span_id);
    assert_eq!(emit.kind, PRODUCER);
    assert_eq!(emit.attributes["cohort.instance"], "tb");
    assert_eq!(emit.attributes["cohort.event"], "order_placed");
    for delivery in ["audit.count_order", "audit.hear_order"] {
        assert_eq!(span(delivery).parent_span_id, emit.span_id, "{delivery}");
        assert_eq!(span(delivery).kind, CONSUMER, "{delivery}");
    }
    assert_eq!(
        (http.kind, call.kind, command.kind),
        (SERVER, CLIENT, SERVER)
    );
    // Where each ran, as the span and its resource say.
    let instance_of = |s: &ReceivedSpan| {
        (
            s.attributes.get("cohort.instance").cloned(),
            s.resource["service.instance.id"].clone(),
        )
    };
    assert_eq!(instance_of(http), (Some("ta".into()), "ta".into()));
    assert_eq!(call.resource["service.instance.id"], "ta");
    assert_eq!(instance_of(command), (Some("tb".into()), "tb".into()));
    assert_eq!(
        instance_of(span("audit.count_order")),
        (Some("ta".into()), "ta".into())
    );
    assert!(spans.iter().all(|s| s.resource["service.name"] == "shop"));
    assert_eq!(http.attributes["http.request.method"], "POST");
    assert_eq!(http.attributes["http.route"], "/orders");
    assert_eq!(http.attributes["http.response.status_code"], "201");
    assert_eq!(command.attributes["cohort.command"], "place_order");
    assert_eq!(command.attributes["cohort.status"], "200");
    assert_eq!(span("audit.count_order").attributes["cohort.outcome"], "ok");

    // The handlers' own log lines carry the trace id: JSON on `tb`, text on `ta`.
    let placed_line = eventually_some("tb logs the order", Duration::from_secs(5), async || {
        b.log()
            .lines()
            .find(|line| line.contains("order placed"))
            .map(str::to_owned)
    })
    .await;
    let placed_line: Value = serde_json::from_str(&placed_line).expect("one JSON object a line");
    assert_eq!(placed_line["fields"]["message"], "order placed");
    assert_eq!(placed_line["span"]["trace_id"], trace_id, "{placed_line}");
    assert_eq!(placed_line["span"]["cohort.command"], "place_order");
    let counted_line = eventually_some("ta logs the count", Duration::from_secs(5), async || {
        a.log()
            .lines()
            .find(|line| line.contains("order counted"))
            .map(str::to_owned)
    })
    .await;
    assert!(
        counted_line.contains(&format!("event{{trace_id={trace_id}}}")),
        "{counted_line}"
    );
    assert!(!counted_line.contains("cohort.instance"), "{counted_line}");
}

/// Without an export, Cohort's text log makes no span: each line a handler logs still carries its
/// request's trace id, after the time, on the instance that ran it as on the one that took it.
#[tokio::test]
async fn without_an_export_the_text_log_still_has_each_lines_trace_id() {
    let servers = Servers::start().await;
    let text = |services: &str| {
        env_with(
            &servers,
            &[
                ("COHORT_SERVICES", services.to_owned()),
                (
                    "COHORT_LOG",
                    "warn,cohort::app=info,example_app=info".to_owned(),
                ),
            ],
        )
    };
    let a = AppProcess::start("ta", true, &text("accounts,audit")).await;
    let b = AppProcess::start("tb", false, &text("orders")).await;
    let client = Client::new(a.url());
    client.sign_in_admin().await;
    let stock = client.put("/stock/sku-t", json!({"qty": 5})).await;
    assert_eq!(stock.status, 200, "{}", stock.text);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    place_traced_order(&client, &traceparent).await;
    for (process, message) in [(&b, "order placed"), (&a, "order counted")] {
        let line = eventually_some(message, Duration::from_secs(5), async || {
            process
                .log()
                .lines()
                .find(|line| line.contains(message))
                .map(str::to_owned)
        })
        .await;
        assert!(line.contains(&format!(" trace_id={trace_id} ")), "{line}");
        assert!(!line.contains('{'), "no span is formatted: {line}");
    }
}

/// Places an order of `sku-t` through `client` in the trace of `traceparent`; `tb` runs it.
async fn place_traced_order(client: &Client, traceparent: &str) {
    let placed = client
        .post_with(
            "/orders",
            json!({"sku": "sku-t", "qty": 1}),
            &[("traceparent", traceparent)],
        )
        .await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    assert_eq!(placed.executed_by(), Some("tb"));
}

/// How many lines of `log` contain `text`.
fn count(log: &str, text: &str) -> usize {
    log.lines().filter(|line| line.contains(text)).count()
}

#[tokio::test]
async fn a_lost_connection_is_logged_once_when_lost_and_once_when_back() {
    let mut servers = Servers::start().await;
    let env = env_with(&servers, &[("COHORT_LOG", "info".to_owned())]);
    let a = AppProcess::start("oa", true, &env).await;
    let client = Client::new(a.url());
    client.sign_in_as("olga").await;

    let broker_lost = "lost the connection to the broker (NATS at";
    let broker_back = "the connection to the broker (NATS at";
    let store_lost = "lost the connection to the state store (Redis at";
    let store_back = "the connection to the state store (Redis at";
    let lines = |log: &str, text: &str, level: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains(text) && l.contains(level))
            .map(str::to_owned)
            .collect()
    };

    servers.nats.stop().await;
    eventually(
        "the broker outage is logged",
        Duration::from_secs(10),
        async || count(&a.log(), broker_lost) > 0,
    )
    .await;
    // Long enough for async-nats to try reconnecting several times.
    tokio::time::sleep(Duration::from_secs(3)).await;
    servers.nats.restart().await;
    eventually(
        "the broker's return is logged",
        Duration::from_secs(15),
        async || !lines(&a.log(), broker_back, ") is back").is_empty(),
    )
    .await;
    let log = a.log();
    assert_eq!(lines(&log, broker_lost, "WARN").len(), 1, "{log}");
    assert_eq!(count(&log, broker_lost), 1, "{log}");
    assert_eq!(lines(&log, broker_back, "INFO").len(), 1, "{log}");
    assert_eq!(
        count(&log, "client error"),
        0,
        "async-nats' own lines are folded: {log}"
    );

    servers.redis.stop().await;
    for _ in 0..5 {
        assert_eq!(client.get("/me").await.status, 503);
    }
    servers.redis.restart().await;
    eventually(
        "the store answers again",
        Duration::from_secs(15),
        async || {
            // The session died with Redis: a 401 is the store answering again.
            client.get("/me").await.status == 401
        },
    )
    .await;
    let log = a.log();
    assert_eq!(lines(&log, store_lost, "WARN").len(), 1, "{log}");
    assert_eq!(count(&log, store_lost), 1, "{log}");
    let back = lines(&log, store_back, ") is back");
    assert_eq!(back.len(), 1, "{log}");
    assert!(back[0].contains("INFO"), "{log}");
}
