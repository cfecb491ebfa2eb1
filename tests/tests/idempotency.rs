//! `Idempotency-Key`: a request sent again with the same key gets the first response, and its
//! effects happen once, whichever instance each copy reaches.

use std::collections::BTreeSet;

use cohort::testing::Cluster;
use cohort_tests::{Client, assert_problem, base_url, start_embedded};
use serde_json::json;

const KEY: &str = "order-7f3a";

#[tokio::test]
async fn a_repeat_gets_the_first_response_and_takes_stock_once() {
    let running = start_embedded(|_| {}).await;
    let client = Client::new(base_url(&running));
    client.sign_in_admin().await;
    client.put("/stock/tea", json!({"qty": 10})).await;
    let order = json!({"sku": "tea", "qty": 3});
    let first = client
        .post_with("/orders", order.clone(), &[("Idempotency-Key", KEY)])
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = client
        .post_with("/orders", order, &[("Idempotency-Key", KEY)])
        .await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.body, first.body, "the same order, replayed");
    let stock = client.get("/stock/tea").await;
    assert_eq!(stock.body["qty"], 7, "stock taken once");
    let audit = client.get("/audit").await;
    assert_eq!(audit.body["orders_recorded"], 1, "{}", audit.text);
}

#[tokio::test]
async fn a_key_sent_with_another_body_is_refused() {
    let running = start_embedded(|_| {}).await;
    let client = Client::new(base_url(&running));
    client.sign_in_admin().await;
    client.put("/stock/tea", json!({"qty": 10})).await;
    let first = client
        .post_with(
            "/orders",
            json!({"sku": "tea", "qty": 1}),
            &[("Idempotency-Key", KEY)],
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    let other = client
        .post_with(
            "/orders",
            json!({"sku": "tea", "qty": 2}),
            &[("Idempotency-Key", KEY)],
        )
        .await;
    assert_problem(&other, 422);
    assert_eq!(other.body["code"], "idempotency_key_reused");
    assert_eq!(other.body["field"], "Idempotency-Key");
}

#[tokio::test]
async fn a_malformed_key_is_a_400_naming_the_header() {
    let running = start_embedded(|_| {}).await;
    let client = Client::new(base_url(&running));
    let too_long = "k".repeat(256);
    let reply = client
        .post_with(
            "/orders",
            json!({"sku": "tea", "qty": 1}),
            &[("Idempotency-Key", &too_long)],
        )
        .await;
    assert_problem(&reply, 400);
    assert_eq!(reply.body["field"], "Idempotency-Key", "{}", reply.text);
}

#[tokio::test]
async fn twenty_copies_on_three_instances_make_one_order() {
    let cluster = Cluster::start(3).await;
    let admin = Client::new(cluster.http(0));
    admin.sign_in_admin().await;
    // One user on every instance: the key is the user's.
    let clients: Vec<Client> = (0..3).map(|i| admin.with_base(cluster.http(i))).collect();
    clients[0].put("/stock/tea", json!({"qty": 100})).await;
    let copies: Vec<_> = (0..20)
        .map(|i| {
            let client = clients[i % 3].with_base(cluster.http(i % 3));
            tokio::spawn(async move {
                client
                    .post_with(
                        "/orders",
                        json!({"sku": "tea", "qty": 2}),
                        &[("Idempotency-Key", KEY)],
                    )
                    .await
            })
        })
        .collect();
    let mut orders = BTreeSet::new();
    for copy in copies {
        let reply = copy.await.expect("joined");
        match reply.status {
            201 => {
                orders.insert(reply.body["id"].to_string());
            }
            409 => assert_eq!(
                reply.body["code"], "idempotency_key_in_use",
                "{}",
                reply.text
            ),
            other => panic!("a copy got {other}: {}", reply.text),
        }
    }
    assert_eq!(orders.len(), 1, "every 201 is the same order: {orders:?}");
    let stock = clients[1].get("/stock/tea").await;
    assert_eq!(stock.body["qty"], 98, "stock taken once");
    let audit = clients[2].get("/audit").await;
    assert_eq!(audit.body["orders_recorded"], 1, "{}", audit.text);
}
