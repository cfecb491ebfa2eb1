//! Secrets never reach the log: an instance logging at trace level, through a sign-up, a log-in
//! and a log-out that cross NATS, writes neither the password nor the session id.

use cohort_tests::Client;
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
