//! Start positions of every-instance subscriptions across a crash: a real `position-app`
//! instance killed with SIGKILL and started again under the same id hears, in its new process,
//! exactly what each position promises (see `src/bin/position-app.rs`).

use std::path::PathBuf;
use std::time::Duration;

use cohort::testing::{eventually, eventually_ok};
use cohort_tests::Client;
use cohort_tests::jetstream::EventStreams;
use cohort_tests::process::AppProcess;
use cohort_tests::servers::Servers;
use serde_json::{Value, json};

/// How long the cache instance may take to hear what it must.
const PATIENCE: Duration = Duration::from_secs(15);
/// How long to watch for a change heard twice, or one too many.
const QUIET: Duration = Duration::from_millis(1500);

fn position_app() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_position-app"))
}

fn only(servers: &Servers, service: &str) -> Vec<(&'static str, String)> {
    let mut env = servers.env();
    env.push(("COHORT_SERVICES", service.to_owned()));
    env
}

async fn change_prices(client: &Client, numbers: impl IntoIterator<Item = u64>) {
    for n in numbers {
        let reply = client.post("/prices", json!({ "n": n })).await;
        assert_eq!(reply.status, 204, "{}", reply.text);
    }
}

/// Waits until the cache instance heard exactly `expected`, and still has a moment later.
async fn assert_heard(client: &Client, expected: Value, what: &str) {
    let heard = async || {
        let reply = client.get("/heard").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if reply.body == expected {
            Ok(())
        } else {
            Err(format!("it heard {}", reply.text))
        }
    };
    eventually_ok(what, PATIENCE, heard).await;
    tokio::time::sleep(QUIET).await;
    let reply = client.get("/heard").await;
    assert_eq!(reply.body, expected, "{what}: nothing more, nothing twice");
}

#[tokio::test]
async fn a_killed_instance_starts_again_at_each_position() {
    let servers = Servers::start().await;
    let (catalog_env, cache_env) = (only(&servers, "catalog"), only(&servers, "cache"));
    let catalog = AppProcess::start_binary(position_app(), "pa", true, &catalog_env);
    let cache = AppProcess::start_binary(position_app(), "pc", false, &cache_env);
    let (catalog, mut cache) = tokio::join!(catalog, cache);
    let client = Client::new(catalog.url());

    change_prices(&client, 1..=5).await;
    let all_five = json!([1, 2, 3, 4, 5]);
    assert_heard(
        &client,
        json!({"resumed": all_five, "new": all_five, "last:3": all_five, "since:1h": all_five}),
        "every subscription of a running instance hears every change",
    )
    .await;
    // Acknowledged, so that what the resumed consumer gives after the crash is only what it
    // missed.
    let streams = EventStreams::connect(&servers.nats.url()).await;
    eventually(
        "the cache instance acknowledges what it heard",
        PATIENCE,
        async || {
            streams
                .progress("cache__resumed__pc")
                .await
                .is_ok_and(|progress| progress.drained())
        },
    )
    .await;

    cache.kill().await;
    change_prices(&client, 6..=7).await;
    cache.restart().await;
    change_prices(&client, [8]).await;
    assert_heard(
        &client,
        json!({
            // Its consumer outlived the crash (same instance id, within 5 minutes).
            "resumed": [6, 7, 8],
            "new": [8],
            "last:3": [5, 6, 7, 8],
            "since:1h": [1, 2, 3, 4, 5, 6, 7, 8],
        }),
        "the restarted instance hears what each position promises",
    )
    .await;
}
