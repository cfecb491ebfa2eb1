//! Redis Cluster: the state store passes the conformance suite on a real 3-master cluster, and the
//! example app's units of work (state, outbox and dedupe markers in one script) commit on it.

use std::sync::Arc;
use std::time::Duration;

use cohort::ErrorKind;
use cohort::state::RedisStore;
use cohort::testing::{RedisCluster, run_store_suite};
use cohort_tests::{Client, base_url, start_embedded, wait_for_audit};
use serde_json::json;
use tokio::time::timeout;

/// How long a connection to a cluster that cannot be used may take to fail: far more than the
/// store's own timeouts, to check that it fails instead of hanging.
const FAILS_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_store_passes_the_suite() {
    let redis = RedisCluster::start(3).await;
    let store = RedisStore::connect(&redis.url()).await.expect("connects");
    run_store_suite(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_commit_and_are_audited_once_on_a_cluster() {
    let redis = RedisCluster::start(3).await;
    let running = start_embedded(|c| c.redis_url = Some(redis.url())).await;
    let client = Client::new(base_url(&running));
    client.sign_in_admin().await;
    let reply = client.put("/stock/apple", json!({"qty": 5})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    for _ in 0..2 {
        let reply = client
            .post("/orders", json!({"sku": "apple", "qty": 2}))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }
    let reply = client
        .post("/orders", json!({"sku": "apple", "qty": 2}))
        .await;
    assert_eq!(reply.status, 409, "{}", reply.text);
    assert_eq!(client.get("/stock/apple").await.body["qty"], 1);
    let audit = wait_for_audit(&client, 2).await;
    assert_eq!(audit["orders_seen"], 2, "{audit}");
}

#[tokio::test]
async fn a_cluster_url_without_a_live_node_is_refused_naming_the_url_and_not_the_password() {
    let free = cohort_tests::process::free_port();
    for url in [
        format!("redis+cluster://:hunter2@127.0.0.1:{free}"),
        "redis+cluster://:hunter2@".to_owned(),
    ] {
        let err = timeout(FAILS_WITHIN, RedisStore::connect(&url))
            .await
            .expect("connect must fail fast, not hang")
            .expect_err("connect without a live node must fail");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        let shown = url.replace("hunter2", "***");
        assert!(err.message().contains(&shown), "{err}");
        assert!(err.message().contains("COHORT_REDIS_URL"), "{err}");
        assert!(!err.message().contains("hunter2"), "{err}");
    }
}
