//! Connections that a locked-down NATS or Redis accepts: each mechanism against a real server that
//! requires it. With the right setting the app starts and serves a command end to end; with a
//! wrong one the start is refused quickly, with an error that names the setting to fix and does
//! not contain the secret.

use std::path::Path;
use std::time::{Duration, Instant};

use cohort::testing::{NatsServer, RedisServer};
use cohort::{ClusterKey, Error};
use cohort_tests::certs::TestCerts;
use cohort_tests::jwt::Operator;
use cohort_tests::logs::CapturedLogs;
use cohort_tests::{InProcess, config_from};
use serde_json::json;

/// A refused start must say so within this, never hang.
const FAILS_WITHIN: Duration = Duration::from_secs(10);

/// Starts the example app in-process from `COHORT_*` variables, as an operator configures it.
async fn start(vars: &[(&str, String)]) -> Result<InProcess, Error> {
    let config = config_from(vars);
    let started = Instant::now();
    let result = tokio::time::timeout(
        FAILS_WITHIN,
        InProcess::try_start(|c| {
            *c = config;
            c.http_addr = None;
        }),
    )
    .await
    .expect("the start ends within 10 s");
    if result.is_err() {
        assert!(started.elapsed() < FAILS_WITHIN, "fails fast");
    }
    result
}

/// NATS at `url`, with the embedded state store (one instance).
fn nats(url: String) -> Vec<(&'static str, String)> {
    vec![
        ("COHORT_NATS_URL", url),
        ("COHORT_ALLOW_LOCAL_STATE", "true".to_owned()),
        (
            "COHORT_CLUSTER_KEY",
            ClusterKey::random().expose().to_owned(),
        ),
    ]
}

/// NATS at `url` as [`nats`] gives it, with `setting` naming `file`.
fn nats_with_file(url: String, setting: &'static str, file: &Path) -> Vec<(&'static str, String)> {
    let mut vars = nats(url);
    vars.push((setting, file.display().to_string()));
    vars
}

/// A command sent through the broker comes back answered.
async fn assert_serves_echo(app: &InProcess) {
    let reply = app.post("/echo", json!({"text": "hi", "n": 1})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["n"], 2);
}

/// Signing up writes to the state store; logging in reads the account back.
async fn assert_keeps_state(app: &InProcess) {
    let credentials = json!({"username": "tls-user", "password": "a-password-long-enough"});
    let reply = app.post("/accounts", credentials.clone()).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let reply = app.post("/sessions", credentials).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body["username"], "tls-user");
}

/// The start failed with an error whose message contains every one of `expected` and not
/// `secret`.
fn assert_refused(result: Result<InProcess, Error>, expected: &[&str], secret: &str) {
    let Err(err) = result else {
        panic!("the start must be refused");
    };
    let message = err.to_string();
    eprintln!("refused as expected: {message}");
    for part in expected {
        assert!(message.contains(part), "names {part}: {message}");
    }
    assert!(
        !message.contains(secret),
        "the secret is not shown: {message}"
    );
}

fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

#[tokio::test]
async fn nats_user_and_password_from_the_url() {
    let server =
        NatsServer::start_with(r#"authorization { user: app, password: "n4ts-s3cret" }"#).await;
    let port = server.port();

    let app = start(&nats(format!("nats://app:n4ts-s3cret@127.0.0.1:{port}")))
        .await
        .expect("the right password is accepted");
    assert_serves_echo(&app).await;

    let wrong = start(&nats(format!("nats://app:wr0ng-pass@127.0.0.1:{port}"))).await;
    assert_refused(
        wrong,
        &["refused the credentials", "COHORT_NATS_URL"],
        "wr0ng-pass",
    );
    let anonymous = start(&nats(format!("nats://127.0.0.1:{port}"))).await;
    assert_refused(
        anonymous,
        &["requires authentication", "COHORT_NATS_URL"],
        "n4ts-s3cret",
    );
}

#[tokio::test]
async fn nats_token_from_the_url() {
    let server = NatsServer::start_with(r#"authorization { token: "t0ken-s3cret" }"#).await;
    let port = server.port();

    let app = start(&nats(format!("nats://t0ken-s3cret@127.0.0.1:{port}")))
        .await
        .expect("the right token is accepted");
    assert_serves_echo(&app).await;

    let wrong = start(&nats(format!("nats://wr0ng-t0ken@127.0.0.1:{port}"))).await;
    assert_refused(
        wrong,
        &["refused the credentials", "token in COHORT_NATS_URL"],
        "wr0ng-t0ken",
    );
}

#[tokio::test]
async fn nats_nkey_from_a_seed_file() {
    let user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let server = NatsServer::start_with(&format!(
        r#"authorization {{ users: [ {{ nkey: "{}" }} ] }}"#,
        user.public_key()
    ))
    .await;
    let dir = tempfile::tempdir().expect("a directory for the seeds");
    let seed_file = dir.path().join("app.nk");
    let stranger_file = dir.path().join("stranger.nk");
    let seed = user.seed().expect("a seed");
    let stranger_seed = stranger.seed().expect("a seed");
    std::fs::write(&seed_file, format!("{seed}\n")).expect("written");
    std::fs::write(&stranger_file, &stranger_seed).expect("written");
    let with_nkey = |file: &Path| nats_with_file(server.url(), "COHORT_NATS_NKEY", file);

    let app = start(&with_nkey(&seed_file))
        .await
        .expect("the listed nkey is accepted");
    assert_serves_echo(&app).await;

    let unknown = start(&with_nkey(&stranger_file)).await;
    assert_refused(
        unknown,
        &["refused the credentials", "COHORT_NATS_NKEY", "stranger.nk"],
        &stranger_seed,
    );
    let missing = start(&with_nkey(&dir.path().join("missing.nk"))).await;
    assert_refused(missing, &["COHORT_NATS_NKEY", "missing.nk"], &seed);
}

#[tokio::test]
async fn nats_creds_file_that_cannot_be_read_is_named() {
    let server = NatsServer::start().await;
    let dir = tempfile::tempdir().expect("a directory");
    let not_creds = dir.path().join("app.creds");
    std::fs::write(&not_creds, "s3cret-but-not-a-creds-file").expect("written");
    for (file, expected) in [
        (dir.path().join("missing.creds"), "missing.creds"),
        (not_creds, "app.creds"),
    ] {
        let vars = nats_with_file(server.url(), "COHORT_NATS_CREDS", &file);
        let result = start(&vars).await;
        assert_refused(
            result,
            &["COHORT_NATS_CREDS", expected],
            "s3cret-but-not-a-creds-file",
        );
    }
}

fn nats_tls_config(certs: &TestCerts, verify_clients: bool) -> String {
    let verify = if verify_clients {
        format!("ca_file: {}\n  verify: true", quoted(&certs.ca()))
    } else {
        String::new()
    };
    format!(
        "tls {{\n  cert_file: {}\n  key_file: {}\n  {verify}\n}}",
        quoted(&certs.server_cert()),
        quoted(&certs.server_key()),
    )
}

#[tokio::test]
async fn nats_tls_trusting_the_ca_from_a_file() {
    let certs = TestCerts::generate();
    let server = NatsServer::start_with(&nats_tls_config(&certs, false)).await;
    let url = format!("tls://127.0.0.1:{}", server.port());
    let with_ca = |ca: &Path| nats_with_file(url.clone(), "COHORT_NATS_TLS_CA", ca);

    let app = start(&with_ca(&certs.ca()))
        .await
        .expect("the server's CA is trusted");
    assert_serves_echo(&app).await;

    let wrong_ca = start(&with_ca(&certs.other_ca())).await;
    assert_refused(
        wrong_ca,
        &["TLS", "COHORT_NATS_TLS_CA", "other-ca.pem"],
        "PRIVATE",
    );
    let no_ca = start(&nats(url.clone())).await;
    assert_refused(no_ca, &["TLS", "COHORT_NATS_TLS_CA"], "PRIVATE");
}

#[tokio::test]
async fn nats_mutual_tls_presents_the_client_certificate() {
    let certs = TestCerts::generate();
    let server = NatsServer::start_with(&nats_tls_config(&certs, true)).await;
    let mut vars = nats_with_file(
        format!("tls://127.0.0.1:{}", server.port()),
        "COHORT_NATS_TLS_CA",
        &certs.ca(),
    );

    let without_certificate = start(&vars).await;
    assert_refused(
        without_certificate,
        &["COHORT_NATS_TLS_CERT", "COHORT_NATS_TLS_KEY"],
        "PRIVATE",
    );

    vars.push((
        "COHORT_NATS_TLS_CERT",
        certs.client_cert().display().to_string(),
    ));
    let only_certificate = start(&vars).await;
    assert_refused(
        only_certificate,
        &["COHORT_NATS_TLS_CERT", "COHORT_NATS_TLS_KEY"],
        "PRIVATE",
    );

    vars.push((
        "COHORT_NATS_TLS_KEY",
        certs.client_key().display().to_string(),
    ));
    let app = start(&vars)
        .await
        .expect("the client certificate is accepted");
    assert_serves_echo(&app).await;
}

#[tokio::test]
async fn redis_acl_user_and_password_from_the_url() {
    let server = RedisServer::start_with(&[
        "--user",
        "app",
        "on",
        ">r3dis-s3cret",
        "~*",
        "+@all",
        "--user",
        "default",
        "off",
    ])
    .await;
    let port = server.port();
    let redis = |url: String| vec![("COHORT_REDIS_URL", url)];

    let app = start(&redis(format!("redis://app:r3dis-s3cret@127.0.0.1:{port}")))
        .await
        .expect("the right password is accepted");
    assert_keeps_state(&app).await;

    let wrong = start(&redis(format!("redis://app:wr0ng-pass@127.0.0.1:{port}"))).await;
    assert_refused(
        wrong,
        &["refused the credentials", "COHORT_REDIS_URL"],
        "wr0ng-pass",
    );
    let anonymous = start(&redis(format!("redis://127.0.0.1:{port}"))).await;
    assert_refused(
        anonymous,
        &["requires a password", "COHORT_REDIS_URL"],
        "r3dis-s3cret",
    );
}

fn redis_tls_args(certs: &TestCerts, verify_clients: bool) -> Vec<String> {
    [
        "--tls-cert-file".to_owned(),
        certs.server_cert().display().to_string(),
        "--tls-key-file".to_owned(),
        certs.server_key().display().to_string(),
        "--tls-ca-cert-file".to_owned(),
        certs.ca().display().to_string(),
        "--tls-auth-clients".to_owned(),
        if verify_clients { "yes" } else { "no" }.to_owned(),
    ]
    .into()
}

async fn start_redis_tls(certs: &TestCerts, verify_clients: bool) -> RedisServer {
    let args = redis_tls_args(certs, verify_clients);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    RedisServer::start_tls(&args).await
}

#[tokio::test]
async fn redis_tls_trusting_the_ca_from_a_file() {
    let certs = TestCerts::generate();
    let server = start_redis_tls(&certs, false).await;
    assert!(server.url().starts_with("rediss://"), "{}", server.url());
    let with_ca = |ca: &Path| {
        vec![
            ("COHORT_REDIS_URL", server.url()),
            ("COHORT_REDIS_TLS_CA", ca.display().to_string()),
        ]
    };

    let app = start(&with_ca(&certs.ca()))
        .await
        .expect("the server's CA is trusted");
    assert_keeps_state(&app).await;

    let wrong_ca = start(&with_ca(&certs.other_ca())).await;
    assert_refused(
        wrong_ca,
        &["TLS", "COHORT_REDIS_TLS_CA", "other-ca.pem"],
        "PRIVATE",
    );
    let plain_url = start(&[
        (
            "COHORT_REDIS_URL",
            format!("redis://127.0.0.1:{}", server.port()),
        ),
        ("COHORT_REDIS_TLS_CA", certs.ca().display().to_string()),
    ])
    .await;
    assert_refused(plain_url, &["COHORT_REDIS_TLS_CA", "rediss://"], "PRIVATE");
}

#[tokio::test]
async fn redis_mutual_tls_presents_the_client_certificate() {
    let certs = TestCerts::generate();
    let server = start_redis_tls(&certs, true).await;
    let mut vars = vec![
        ("COHORT_REDIS_URL", server.url()),
        ("COHORT_REDIS_TLS_CA", certs.ca().display().to_string()),
    ];

    let without_certificate = start(&vars).await;
    assert_refused(
        without_certificate,
        &["COHORT_REDIS_TLS_CERT", "COHORT_REDIS_TLS_KEY"],
        "PRIVATE",
    );

    vars.push((
        "COHORT_REDIS_TLS_CERT",
        certs.client_cert().display().to_string(),
    ));
    vars.push((
        "COHORT_REDIS_TLS_KEY",
        certs.client_key().display().to_string(),
    ));
    let app = start(&vars)
        .await
        .expect("the client certificate is accepted");
    assert_keeps_state(&app).await;
}

#[tokio::test]
async fn nats_creds_file_of_a_jwt_user() {
    let operator = Operator::new();
    let server = NatsServer::start_with(&operator.server_config()).await;
    let dir = tempfile::tempdir().expect("a directory for the creds");
    let creds = dir.path().join("app.creds");
    std::fs::write(&creds, operator.user_creds()).expect("written");
    let stranger_creds = dir.path().join("stranger.creds");
    let stranger = Operator::new().user_creds();
    std::fs::write(&stranger_creds, &stranger).expect("written");
    let with_creds = |file: &Path| nats_with_file(server.url(), "COHORT_NATS_CREDS", file);

    let app = start(&with_creds(&creds))
        .await
        .expect("the operator's user is accepted");
    assert_serves_echo(&app).await;

    let unknown = start(&with_creds(&stranger_creds)).await;
    let stranger_seed = stranger
        .lines()
        .find(|line| line.starts_with("SU"))
        .expect("a seed line");
    assert_refused(
        unknown,
        &[
            "refused the credentials",
            "COHORT_NATS_CREDS",
            "stranger.creds",
        ],
        stranger_seed,
    );
}

#[tokio::test]
async fn secrets_stay_out_of_the_logs_through_an_outage_and_a_refusal() {
    let (logs, _logging) = CapturedLogs::start();

    let mut server =
        NatsServer::start_with(r#"authorization { user: app, password: "l0gged-s3cret" }"#).await;
    let mut redis = RedisServer::start_with(&["--requirepass", "r3dis-l0gged"]).await;
    let url = format!("nats://app:l0gged-s3cret@127.0.0.1:{}", server.port());
    let mut vars = nats(url);
    let redis_url = format!("redis://:r3dis-l0gged@127.0.0.1:{}", redis.port());
    vars.push(("COHORT_REDIS_URL", redis_url));
    let app = start(&vars).await.expect("the passwords are accepted");
    assert_serves_echo(&app).await;
    assert_keeps_state(&app).await;
    server.stop().await;
    redis.stop().await;
    // The clients try to reconnect and log every failed attempt; a request fails meanwhile.
    let during_outage = app.get("/stock/tls-sku").await;
    assert_eq!(during_outage.status, 503, "{}", during_outage.text);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().await;
    redis.restart().await;
    cohort::testing::eventually(
        "echo answers after the restart",
        Duration::from_secs(10),
        async || {
            app.post("/echo", json!({"text": "hi", "n": 1}))
                .await
                .status
                == 200
        },
    )
    .await;
    let wrong = format!("nats://app:wr0ng-l0gged@127.0.0.1:{}", server.port());
    assert!(
        start(&nats(wrong)).await.is_err(),
        "a wrong password is refused"
    );

    let logs = logs.text();
    assert!(
        logs.contains("lost the connection to the broker (NATS at"),
        "the outage is logged: {logs}"
    );
    for secret in ["l0gged-s3cret", "wr0ng-l0gged", "r3dis-l0gged"] {
        assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
    }
}
