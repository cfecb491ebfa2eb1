//! Access guards and signed-in sessions: refused callers over HTTP and straight over NATS, the
//! session id rotated at sign-in, "log out everywhere" across instances, and the guarded routes in
//! the OpenAPI document.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cohort::broker::spi::header;
use cohort::testing::Cluster;
use cohort_tests::signing::headers;
use cohort_tests::{ADMIN, Client, assert_problem, base_url, start_embedded};
use serde_json::{Value, json};

/// A shop with one order of `shop-admin`'s, and a client signed in as the admin.
async fn shop_with_an_order(base: String) -> (Client, u64) {
    let admin = Client::new(base);
    admin.sign_in_admin().await;
    let stocked = admin.put("/stock/tea", json!({"qty": 5})).await;
    assert_eq!(stocked.status, 200, "{}", stocked.text);
    let order = admin.post("/orders", json!({"sku": "tea", "qty": 1})).await;
    assert_eq!(order.status, 201, "{}", order.text);
    let id = order.body["id"].as_u64().expect("an order id");
    (admin, id)
}

#[tokio::test]
async fn guards_refuse_http_callers_with_problems_that_say_why() {
    let running = start_embedded(|_| {}).await;
    let (admin, id) = shop_with_an_order(base_url(&running)).await;

    let anonymous = Client::new(base_url(&running));
    let reply = anonymous.put("/stock/tea", json!({"qty": 99})).await;
    assert_problem(&reply, 401);
    assert_eq!(reply.body["code"], "unauthorized");
    assert!(
        reply.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("signed-in session")),
        "{}",
        reply.text
    );
    assert_problem(
        &anonymous
            .post("/orders", json!({"sku": "tea", "qty": 1}))
            .await,
        401,
    );
    assert_problem(&anonymous.get(&format!("/orders/{id}")).await, 401);

    let bob = Client::new(base_url(&running));
    bob.sign_in_as("bob").await;
    let reply = bob.put("/stock/tea", json!({"qty": 99})).await;
    assert_problem(&reply, 403);
    assert_eq!(reply.body["code"], "forbidden");
    assert!(
        reply.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("`admin`")),
        "{}",
        reply.text
    );
    // Someone else's order is as unknown as one that does not exist.
    assert_problem(&bob.get(&format!("/orders/{id}")).await, 404);
    let own = bob.post("/orders", json!({"sku": "tea", "qty": 1})).await;
    assert_eq!(own.status, 201, "{}", own.text);
    assert_eq!(own.body["placed_by"], "bob");

    let reply = admin.get(&format!("/orders/{id}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["placed_by"], ADMIN);
    assert_eq!(
        admin.get("/stock/tea").await.body["qty"],
        3,
        "nothing refused took stock"
    );
}

#[tokio::test]
async fn a_plain_nats_request_without_a_signed_in_session_is_refused_by_the_executing_instance() {
    let cluster = Cluster::start(1).await;
    let (admin, id) = shop_with_an_order(cluster.http(0)).await;
    let nats = async_nats::connect(cluster.nats.url())
        .await
        .expect("connects to NATS");
    let subject = "cohort.cmd.orders.v1.get_order";
    let input = Bytes::from(json!({"id": id}).to_string());
    // Signed with the cluster key, so that only the guard can refuse them.
    let key = cluster.key.expose();
    let ask = async |pairs: &[(&str, &str)]| {
        let headers = headers(Some(key), subject, pairs, &input);
        let reply = nats
            .request_with_headers(subject, headers, input.clone())
            .await
            .expect("an instance replies");
        let status = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(header::STATUS))
            .map(|v| v.as_str().to_owned());
        let body: Value = serde_json::from_slice(&reply.payload).unwrap_or(Value::Null);
        (status, body)
    };

    let (status, body) = ask(&[]).await;
    assert_eq!(status.as_deref(), Some("401"), "{body}");
    assert_eq!(body["code"], "unauthorized", "{body}");
    // A principal header asserts nothing the guards trust: only a signed-in session does.
    let (status, body) = ask(&[(header::PRINCIPAL, ADMIN)]).await;
    assert_eq!(status.as_deref(), Some("401"), "{body}");

    let cookie = admin.cookie().expect("the admin holds a session");
    let session = cookie.trim_start_matches("cohort_session=");
    let (status, body) = ask(&[(header::SESSION, session)]).await;
    assert_eq!(status, None, "a success carries no status: {body}");
    assert_eq!(body["id"], id, "{body}");
}

#[tokio::test]
async fn signing_in_rotates_the_session_id() {
    let running = start_embedded(|_| {}).await;
    let alice = Client::new(base_url(&running));
    alice.sign_in_as("alice").await;
    let first = alice.cookie().expect("a session");
    alice.sign_in_as("alice").await;
    let second = alice.cookie().expect("a session");
    assert_ne!(first, second, "a new id at each sign-in");
    assert_eq!(alice.get("/me").await.status, 200);
    let replay = Client::new(base_url(&running)).with_cookie(first);
    assert_problem(&replay.get("/me").await, 401);
}

#[tokio::test]
async fn logging_out_everywhere_ends_the_sessions_on_other_instances() {
    let cluster = Cluster::start(2).await;
    let laptop = Client::new(cluster.http(0));
    let phone = Client::new(cluster.http(1));
    let bob = Client::new(cluster.http(1));
    laptop.sign_in_as("alice").await;
    phone.sign_in_as("alice").await;
    bob.sign_in_as("bob").await;
    assert_ne!(laptop.cookie(), phone.cookie(), "two sessions of one user");
    assert_eq!(phone.get("/me").await.status, 200);

    let reply = laptop.delete("/sessions/all").await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert!(laptop.cookie().is_none(), "the caller's cookie is cleared");
    assert_problem(&phone.get("/me").await, 401);
    let other = bob.get("/me").await;
    assert_eq!(other.status, 200, "another user stays in: {}", other.text);
    assert_eq!(other.body["username"], "bob");
}

#[tokio::test]
async fn guarded_routes_declare_the_session_cookie_and_their_401_and_403() {
    let running = start_embedded(|_| {}).await;
    let document = Client::new(base_url(&running))
        .get("/openapi.json")
        .await
        .body;
    assert_eq!(
        document["components"]["securitySchemes"]["cookieAuth"],
        json!({"type": "apiKey", "in": "cookie", "name": "cohort_session"})
    );
    let set_stock = &document["paths"]["/stock/{sku}"]["put"];
    assert_eq!(set_stock["security"], json!([{"cookieAuth": []}]));
    for (status, name) in [("401", "Unauthorized"), ("403", "Forbidden")] {
        let reference = &set_stock["responses"][status]["$ref"];
        assert_eq!(
            reference,
            &format!("#/components/responses/{name}"),
            "{status}: {set_stock}"
        );
        let content = &document["components"]["responses"][name]["content"];
        assert_eq!(
            content["application/problem+json"]["schema"]["$ref"],
            "#/components/schemas/Problem"
        );
    }
    let get_stock = &document["paths"]["/stock/{sku}"]["get"];
    assert!(get_stock.get("security").is_none(), "{get_stock}");
    assert!(get_stock["responses"].get("401").is_none(), "{get_stock}");
}

#[tokio::test]
async fn a_log_in_takes_as_long_for_an_unknown_user_as_for_a_wrong_password() {
    let running = start_embedded(|_| {}).await;
    let client = Client::new(base_url(&running));
    client.sign_in_as("carol").await;
    let average = async |username: &str| {
        let tries = 2;
        let started = Instant::now();
        for _ in 0..tries {
            let credentials = json!({"username": username, "password": "not it"});
            assert_problem(&client.post("/sessions", credentials).await, 401);
        }
        started.elapsed() / tries
    };
    // Both warmed once, then measured alternately so that a slow moment hurts neither alone.
    average("carol").await;
    let (mut wrong, mut unknown) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..2 {
        wrong += average("carol").await;
        unknown += average("nobody-at-all").await;
    }
    let ratio = unknown.as_secs_f64() / wrong.as_secs_f64();
    // Without the dummy hash the unknown user was ~30 times faster; a loose bound cannot flake.
    assert!(
        (0.5..2.0).contains(&ratio),
        "unknown user {unknown:?}, wrong password {wrong:?}: both must run the hash"
    );
}
