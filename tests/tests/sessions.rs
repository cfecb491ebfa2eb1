//! Accounts and sessions over real HTTP: sign up, log in, who am I, log out, with the session
//! cookie a browser would keep.

use std::sync::Arc;

use cohort::state::MemoryStore;
use cohort::state::spi::StateStore;
use cohort_tests::{ANY_LOOPBACK_PORT, Client, assert_problem, base_url, start_app};
use serde_json::json;

#[tokio::test]
async fn accounts_sign_up_log_in_me_log_out() {
    let store = Arc::new(MemoryStore::new());
    let running = start_app(
        |config| config.http_addr = ANY_LOOPBACK_PORT,
        |app| app.store(store.clone()),
    )
    .await
    .expect("starts");
    let client = Client::new(base_url(&running));
    let alice = json!({"username": "alice", "password": "correct horse"});

    let reply = client.post("/accounts", alice.clone()).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.body, json!({"username": "alice"}));
    assert_problem(&client.post("/accounts", alice.clone()).await, 409);
    let reply = client
        .post("/accounts", json!({"username": "al", "password": "x"}))
        .await;
    assert_problem(&reply, 422);
    assert_eq!(reply.body["field"], "username");
    let reply = client
        .post(
            "/accounts",
            json!({"username": "a".repeat(33), "password": "x"}),
        )
        .await;
    assert_eq!(reply.body["field"], "username");

    let stored = store
        .get("{cohort:accounts}:user:alice")
        .await
        .expect("get")
        .expect("stored");
    let stored = String::from_utf8_lossy(&stored.value);
    assert!(
        !stored.contains("correct horse") && stored.contains("$argon2"),
        "{stored}"
    );

    assert_problem(&client.get("/me").await, 401);
    let reply = client
        .post(
            "/sessions",
            json!({"username": "alice", "password": "wrong"}),
        )
        .await;
    assert_problem(&reply, 401);
    let reply = client
        .post("/sessions", json!({"username": "nobody", "password": "x"}))
        .await;
    assert_problem(&reply, 401);
    assert!(client.cookie().is_none());

    let reply = client.post("/sessions", alice.clone()).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let set_cookie = reply.header("set-cookie").expect("a session cookie");
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    assert!(
        set_cookie.contains("; Secure"),
        "secure by default: {set_cookie}"
    );
    let id = client
        .cookie()
        .expect("kept")
        .trim_start_matches("cohort_session=")
        .to_owned();
    assert!(id.len() >= 32, "at least 128 random bits: {id}");

    let reply = client.get("/me").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"username": "alice"}));

    let reply = client.delete("/sessions").await;
    assert_eq!(reply.status, 204, "{}", reply.text);
    assert!(reply.text.is_empty());
    assert!(
        reply
            .header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
    assert!(client.cookie().is_none());
    assert_problem(&client.get("/me").await, 401);

    // The old cookie is dead too, not just forgotten by this client.
    let replay = Client::new(base_url(&running)).with_cookie(format!("cohort_session={id}"));
    assert_problem(&replay.get("/me").await, 401);
}

#[tokio::test]
async fn the_cookie_is_not_secure_when_opted_out() {
    let running = start_app(
        |config| {
            config.http_addr = ANY_LOOPBACK_PORT;
            config.session_cookie_secure = false;
        },
        |app| app,
    )
    .await
    .expect("starts");
    let client = Client::new(base_url(&running));
    let credentials = json!({"username": "dave", "password": "pw"});
    assert_eq!(
        client.post("/accounts", credentials.clone()).await.status,
        201
    );
    let reply = client.post("/sessions", credentials).await;
    let set_cookie = reply.header("set-cookie").expect("a session cookie");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
}
