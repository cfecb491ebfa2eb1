//! Settings as an operator gives them: a TOML file (`COHORT_CONFIG`), variables that win over it,
//! secrets in files (`*_FILE`); the example shop's handlers see them, and a bad one stops the
//! start, naming the setting.

use std::collections::HashMap;
use std::time::Duration;

use cohort::{App, Running};
use cohort_tests::process::example_app_binary;
use cohort_tests::{ANY_LOOPBACK_PORT, Client, base_url, start_app};
use example_app::settings::ShopConfig;
use serde_json::json;
use tempfile::TempDir;

/// The shop's file: the environment lowers its order limit, a secret file names its admins.
const SETTINGS: &str = r#"
[cohort]
http_addr = "127.0.0.1:0"
command_timeout = "10s"

[shop]
max_order_quantity = 5
admins = ["nobody"]
"#;

/// `text` written to `name` in `dir`; its path.
fn write(dir: &TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("the file is written");
    path.display().to_string()
}

/// The example app with the settings of `vars` alone (the process's environment is not read).
fn app_with(vars: &[(&str, String)]) -> Result<App, cohort::Error> {
    // Naming the example app's code keeps its registrations linked into this test binary.
    let _ = example_app::app;
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect();
    App::from_vars(move |name| vars.get(name).cloned())
}

/// Why the example app with `vars` does not start.
async fn refusal(vars: &[(&str, String)]) -> cohort::Error {
    let started = app_with(vars)
        .expect("Cohort's settings are valid")
        .start()
        .await;
    started.err().expect("the start is refused")
}

/// `admin` may set the stock, and an order of more than `max` is refused, naming `qty`.
async fn serves_as_configured(running: &Running, admin: &str, max: u64) {
    let client = Client::new(base_url(running));
    client.sign_in_as(admin).await;
    let stocked = client
        .put("/stock/tea", json!({"sku": "tea", "qty": 50}))
        .await;
    assert_eq!(stocked.status, 200, "{admin} is an admin: {}", stocked.text);
    let order = |qty| json!({"sku": "tea", "qty": qty});
    let too_many = client.post("/orders", order(max + 1)).await;
    assert_eq!(too_many.status, 422, "{}", too_many.text);
    assert_eq!(too_many.body["field"], "qty", "{}", too_many.text);
    assert_eq!(too_many.body["detail"], format!("at most {max} per order"));
    let placed = client.post("/orders", order(max)).await;
    assert_eq!(placed.status, 201, "{}", placed.text);
}

#[tokio::test]
async fn handlers_see_the_file_the_environment_and_the_secret_files() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let app = app_with(&[
        ("COHORT_CONFIG", write(&dir, "shop.toml", SETTINGS)),
        ("SHOP_MAX_ORDER_QUANTITY", "3".to_owned()),
        (
            "SHOP_ADMINS_FILE",
            write(&dir, "admins", "boss,shop-owner\n"),
        ),
    ])
    .expect("valid");
    assert_eq!(app.config().command_timeout, Duration::from_secs(10));
    let running = app.start().await.expect("the shop starts");
    serves_as_configured(&running, "boss", 3).await;

    let shopper = Client::new(base_url(&running));
    shopper.sign_in_as("nobody").await;
    let refused = shopper
        .put("/stock/tea", json!({"sku": "tea", "qty": 1}))
        .await;
    assert_eq!(
        refused.status, 403,
        "the file's admins were replaced by the secret file's"
    );
    running.shutdown().await.expect("stops");
}

#[tokio::test]
async fn a_bad_setting_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let settings = write(&dir, "shop.toml", SETTINGS);
    let err = refusal(&[
        ("COHORT_CONFIG", settings),
        ("SHOP_MAX_ORDER_QUANTITY", "5000".to_owned()),
    ])
    .await;
    assert_eq!(
        err.message(),
        "SHOP_MAX_ORDER_QUANTITY is not valid: expected a quantity from 1 to 1000"
    );
    let bad_file = write(&dir, "bad.toml", "[shop]\nmax_order_quantity = 0\n");
    let err = refusal(&[("COHORT_CONFIG", bad_file.clone())]).await;
    assert!(
        err.message().starts_with(&format!(
            "`shop.max_order_quantity` in {bad_file} is not valid"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn the_example_binary_refuses_a_bad_setting_before_it_serves() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut command = tokio::process::Command::new(example_app_binary());
    command
        .env_clear()
        .env("COHORT_CONFIG", write(&dir, "shop.toml", SETTINGS))
        .env("SHOP_MAX_ORDER_QUANTITY", "lots")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the binary exits by itself within 30 s")
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it must not start: {stderr}");
    assert!(
        stderr.contains("SHOP_MAX_ORDER_QUANTITY is not valid: expected u32, found text"),
        "names the variable: {stderr}"
    );
    assert!(!stderr.contains("lots"), "never the value: {stderr}");
}

#[tokio::test]
async fn settings_given_in_code_are_used_as_they_are() {
    let settings = ShopConfig {
        max_order_quantity: 1,
        admins: vec!["coder".to_owned()],
    };
    let running = start_app(
        |c| c.http_addr = ANY_LOOPBACK_PORT,
        |app| app.settings(settings),
    )
    .await
    .expect("the shop starts");
    serves_as_configured(&running, "coder", 1).await;
    running.shutdown().await.expect("stops");
}
