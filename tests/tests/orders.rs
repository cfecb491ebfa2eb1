//! Orders over real HTTP: stock taken atomically, and the events an order causes, audited or
//! dead-lettered when they do not decode.

use std::sync::Arc;
use std::time::Duration;

use cohort::broker::MemoryBroker;
use cohort::broker::spi::{Broker, Message, header};
use cohort::testing::eventually_ok;
use cohort_tests::{
    ADMIN, Client, assert_problem, base_url, start_app, start_embedded, wait_for_audit,
};
use serde_json::{Value, json};

#[tokio::test]
async fn orders_take_stock_atomically_and_are_audited() {
    let running = start_embedded(|_| {}).await;
    let client = Client::new(base_url(&running));
    client.sign_in_admin().await;
    let reply = client.put("/stock/apple", json!({"qty": 5})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"sku": "apple", "qty": 5}));

    let reply = client
        .post("/orders", json!({"sku": "apple", "qty": 2}))
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let id = reply.body["id"].as_u64().expect("an id");
    assert_eq!(reply.body["sku"], "apple");
    assert_eq!(reply.body["qty"], 2);

    let reply = client
        .post("/orders", json!({"sku": "apple", "qty": 4}))
        .await;
    assert_problem(&reply, 409);
    assert_eq!(client.get("/stock/apple").await.body["qty"], 3);
    assert_problem(
        &client
            .post("/orders", json!({"sku": "pear", "qty": 1}))
            .await,
        409,
    );
    let reply = client
        .post("/orders", json!({"sku": "apple", "qty": 0}))
        .await;
    assert_eq!(reply.body["field"], "qty");

    let reply = client.get(&format!("/orders/{id}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(
        reply.body,
        json!({"id": id, "sku": "apple", "qty": 2, "placed_by": ADMIN})
    );
    assert_problem(&client.get("/orders/999999").await, 404);
    let reply = client.get("/orders/abc").await;
    assert_problem(&reply, 422);
    assert_eq!(reply.body["field"], "id");

    let audit = wait_for_audit(&client, 1).await;
    assert_eq!(
        audit["by_instance"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum::<u64>()),
        Some(1)
    );
}

#[tokio::test]
async fn an_event_that_does_not_decode_is_dead_lettered_without_retries() {
    let broker = MemoryBroker::new();
    let configure = |config: &mut cohort::Config| {
        config.http_addr = None;
        // Retries would take minutes: a dead letter within the test's patience shows there were none.
        config.event_backoff = vec![Duration::from_secs(600)];
    };
    let running = start_app(configure, |app| app.broker(Arc::new(broker.clone())))
        .await
        .expect("starts");
    broker
        .publish(
            "cohort.evt.orders.order_placed",
            Message::new(r#"{"id": "not a number"}"#),
        )
        .await
        .expect("published");
    let letters = eventually_ok(
        "the undecodable event must be dead-lettered by both audit subscriptions",
        Duration::from_secs(10),
        async || match broker.dead_letters() {
            letters if letters.len() == 2 => Ok(letters),
            letters => Err(format!("the dead letters so far: {letters:?}")),
        },
    )
    .await;
    let subjects: Vec<&str> = letters
        .iter()
        .map(|(subject, _)| subject.as_str())
        .collect();
    assert!(
        subjects.contains(&"cohort.dlq.audit.count_order"),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"cohort.dlq.audit.hear_order"),
        "{subjects:?}"
    );
    let error = letters[0].1.meta.header(header::ERROR).unwrap_or_default();
    assert!(
        error.contains("id"),
        "the dead letter says what was wrong: {error}"
    );
    running.shutdown().await.expect("shuts down");
}
