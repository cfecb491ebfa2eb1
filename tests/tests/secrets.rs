//! Secrets never reach the log: an instance logging at trace level, through a sign-up, a log-in
//! and a log-out that cross NATS, writes neither the password nor the session id. Nor do they
//! reach the event stream: an event a signed-in caller causes keeps its principal, not its session.

use cohort_tests::Client;
use cohort_tests::jetstream::EventStreams;
use cohort_tests::process::AppProcess;
use cohort_tests::servers::Servers;
use serde_json::json;

const PASSWORD: &str = "correct-horse-battery-staple-7f3a";

#[tokio::test]
async fn a_trace_level_log_holds_no_password_and_no_session_id() {
    let servers = Servers::start().await;
    let mut env = servers.env();
    env.push(("COHORT_LOG", "trace".to_owned()));
    // The front runs no accounts commands, so they cross NATS to the worker.
    let mut front_env = env.clone();
    front_env.push(("COHORT_SERVICES", "echo".to_owned()));
    let mut worker_env = env;
    worker_env.push(("COHORT_SERVICES", "accounts".to_owned()));
    let front = AppProcess::start("front", true, &front_env).await;
    let worker = AppProcess::start("worker", false, &worker_env).await;

    let client = Client::new(front.url());
    let credentials = json!({"username": "trace-user", "password": PASSWORD});
    assert_eq!(
        client.post("/accounts", credentials.clone()).await.status,
        201
    );
    assert_eq!(client.post("/sessions", credentials).await.status, 200);
    let cookie = client.cookie().expect("a session cookie");
    let session_id = cookie.trim_start_matches("cohort_session=").to_owned();
    assert_eq!(client.get("/me").await.status, 200);
    assert_eq!(client.delete("/sessions").await.status, 204);

    for process in [&front, &worker] {
        let log = process.log();
        // The worker logged the commands it ran: the log really is at debug level or finer.
        assert!(
            process.id != "worker" || log.contains("command ran"),
            "the worker's log shows no command: is it logging at trace level?\n{log}"
        );
        assert!(
            !log.contains(PASSWORD),
            "{} logged the password",
            process.id
        );
        assert!(
            !log.contains(&session_id),
            "{} logged the session id",
            process.id
        );
    }
}

#[tokio::test]
async fn an_event_a_signed_in_caller_causes_is_stored_without_its_session_id() {
    let servers = Servers::start().await;
    let shop = AppProcess::start("shop", true, &servers.env()).await;
    let client = Client::new(shop.url());
    client.sign_in_admin().await;
    let session_id = client.cookie().expect("a session cookie");
    let session_id = session_id.trim_start_matches("cohort_session=");
    client.place_one_order("bolt").await;
    let stored = EventStreams::connect(&servers.nats.url())
        .await
        .last_event("cohort.evt.orders.order_placed")
        .await;
    let headers = &stored.headers;
    assert!(headers.get("Cohort-Principal").is_some(), "{headers:?}");
    assert!(headers.get("Cohort-Session").is_none(), "{headers:?}");
    let raw = format!("{headers:?}{}", String::from_utf8_lossy(&stored.payload));
    assert!(!raw.contains(session_id), "the session id is stored: {raw}");
}
