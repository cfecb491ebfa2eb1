//! The least privileges the Security chapter gives the instances, tried on real servers: the
//! nats-server permissions and the Redis ACL user are enough for everything the example shop does
//! (commands across instances, sessions, units of work with their outbox, events to a
//! subscription), and a calling application gets only the commands it is allowed.

use std::time::Duration;

use bytes::Bytes;
use cohort::testing::{NatsServer, RedisServer};
use cohort::{ClusterKey, Running};
use cohort_tests::signing::headers;
use cohort_tests::{ANY_LOOPBACK_PORT, Client, base_url, config_from, start_app, wait_for_audit};
use serde_json::json;

/// The `authorization` block of the Security chapter's nats-server configuration.
const NATS_AUTHORIZATION: &str = r#"
authorization {
  INSTANCE = {
    publish = ["cohort.>", "$JS.API.>", "$JS.ACK.>", "$SRV.>", "_INBOX.>"]
    subscribe = ["cohort.>", "_INBOX.>", "$SRV.>"]
  }
  CALLER = {
    publish = ["cohort.cmd.echo.>"]
    subscribe = ["_INBOX.>"]
  }
  users = [
    { user: orders, password: "orders-pw", permissions: $INSTANCE }
    { user: reporting, password: "reporting-pw", permissions: $CALLER }
  ]
}
"#;

/// The Security chapter's Redis ACL, as redis-server arguments.
const REDIS_ACL: &[&str] = &[
    "--user",
    "default",
    "off",
    "--user",
    "orders",
    "on",
    ">redis-pw",
    "~{cohort:*",
    "resetchannels",
    "+@all",
    "-@dangerous",
];

/// How long a call that permissions forbid may take to fail.
const DENIED_WITHIN: Duration = Duration::from_secs(2);

async fn instance(id: &str, nats: &NatsServer, redis: &RedisServer, key: &ClusterKey) -> Running {
    let vars = [
        ("COHORT_INSTANCE_ID", id.to_owned()),
        (
            "COHORT_NATS_URL",
            format!("nats://orders:orders-pw@127.0.0.1:{}", nats.port()),
        ),
        (
            "COHORT_REDIS_URL",
            format!("redis://orders:redis-pw@127.0.0.1:{}", redis.port()),
        ),
        ("COHORT_CLUSTER_KEY", key.expose().to_owned()),
        ("COHORT_EVENT_ACK_WAIT", "2s".to_owned()),
    ];
    let config = config_from(&vars);
    start_app(
        |c| {
            *c = config;
            c.http_addr = ANY_LOOPBACK_PORT;
        },
        |app| app,
    )
    .await
    .expect("an instance with the least privileges starts")
}

#[tokio::test]
async fn the_least_privileges_are_enough_for_the_instances_and_hold_for_a_caller() {
    let nats = NatsServer::start_with(NATS_AUTHORIZATION).await;
    let redis = RedisServer::start_with(REDIS_ACL).await;
    let key = ClusterKey::random();
    let a = instance("lp-a", &nats, &redis, &key).await;
    let b = instance("lp-b", &nats, &redis, &key).await;

    let admin = Client::new(base_url(&a));
    admin.sign_in_admin().await;
    let reply = admin.put("/stock/pen", json!({"qty": 10})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let shopper = admin.with_base(base_url(&b));
    for _ in 0..3 {
        let reply = shopper
            .post("/orders", json!({"sku": "pen", "qty": 1}))
            .await;
        assert_eq!(reply.status, 201, "{}", reply.text);
    }
    wait_for_audit(&admin, 3).await;
    assert_eq!(admin.get("/stock/pen").await.body["qty"], 7);

    let caller = async_nats::ConnectOptions::with_user_and_password(
        "reporting".to_owned(),
        "reporting-pw".to_owned(),
    )
    .connect(nats.url())
    .await
    .expect("the calling application connects");
    let call = async |subject: &str, body: &'static [u8]| {
        let signed = headers(Some(key.expose()), subject, &[], body);
        let request = caller.request_with_headers(subject.to_owned(), signed, Bytes::from(body));
        tokio::time::timeout(DENIED_WITHIN, request).await
    };
    let echoed = call("cohort.cmd.echo.v1.echo", br#"{"text":"hi","n":1}"#)
        .await
        .expect("answered in time")
        .expect("the caller may call echo");
    let echoed: serde_json::Value = serde_json::from_slice(&echoed.payload).expect("JSON");
    assert_eq!(echoed["n"], 2, "{echoed}");
    let denied = call("cohort.cmd.orders.v1.orders_recorded", b"{}").await;
    assert!(
        !matches!(denied, Ok(Ok(_))),
        "the caller may not call the orders service"
    );
}
