//! Helpers shared by the end-to-end tests: an HTTP client that keeps the session cookie, ways to
//! start the example app, in-process or as real processes, loads and the books they must balance,
//! and what several test files check.

pub mod books;
pub mod browser;
pub mod certs;
pub mod drift;
pub mod faults;
mod in_process;
pub mod jetstream;
pub mod jwt;
pub mod load;
pub mod logs;
pub mod otlp;
pub mod process;
pub mod scrape;
pub mod servers;
pub mod signing;

pub use in_process::InProcess;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use cohort::testing::eventually_ok;
use cohort::{App, Config, Running};
use reqwest::Method;
use reqwest::header::{COOKIE, HeaderMap, SET_COOKIE};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The username the example shop makes an admin when the tests run under cargo: `.cargo/config.toml`
/// lists it in `SHOP_ADMINS`.
pub const ADMIN: &str = "shop-admin";

/// The input or output of a test's own command that needs none: `{}`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub struct Nothing {}

/// A `Config::http_addr` on loopback, on a port the OS picks.
pub const ANY_LOOPBACK_PORT: Option<SocketAddr> =
    Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));

/// Starts one embedded instance of the example app (memory broker and store) on a free port.
pub async fn start_embedded(configure: impl FnOnce(&mut Config)) -> Running {
    let configure = |config: &mut Config| {
        config.http_addr = ANY_LOOPBACK_PORT;
        configure(config);
    };
    start_app(configure, |app| app)
        .await
        .expect("the example app starts")
}

/// Starts the example app with the default configuration changed by `configure`, and `build`
/// adding to the app (a broker or a store of the test's own) before it starts.
pub async fn start_app(
    configure: impl FnOnce(&mut Config),
    build: impl FnOnce(App) -> App,
) -> Result<Running, cohort::Error> {
    // Naming the example app's code keeps its registrations linked into the test binary.
    let _ = example_app::app;
    let mut config = Config::default();
    configure(&mut config);
    build(App::with_config(config)).start().await
}

/// The configuration an operator's `COHORT_*` variables `vars` give (the others unset).
pub fn config_from(vars: &[(&str, String)]) -> Config {
    Config::from_vars(|name| {
        vars.iter()
            .find(|(var, _)| *var == name)
            .map(|(_, value)| value.clone())
    })
    .expect("the variables parse")
}

/// The base URL of a running instance.
pub fn base_url(running: &Running) -> String {
    format!(
        "http://{}",
        running.http_addr().expect("the instance serves HTTP")
    )
}

/// An HTTP client for one user: it keeps the `cohort_session` cookie like a browser would.
pub struct Client {
    base: String,
    http: reqwest::Client,
    cookie: Mutex<Option<String>>,
}

/// A response, with its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    /// A reply of `status` with `headers`, its body parsed from `text` when it is JSON.
    pub fn new(status: u16, headers: HeaderMap, text: String) -> Self {
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// The instance that answered HTTP.
    pub fn instance(&self) -> Option<&str> {
        self.header("x-cohort-instance")
    }
    /// The instance that ran the command.
    pub fn executed_by(&self) -> Option<&str> {
        self.header("x-cohort-executed-by")
    }
    /// The content type.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }
}

impl Client {
    pub fn new(base: impl Into<String>) -> Self {
        Client {
            base: base.into(),
            http: reqwest::Client::new(),
            cookie: Mutex::new(None),
        }
    }

    /// The same user (same cookie) talking to another instance.
    pub fn with_base(&self, base: impl Into<String>) -> Self {
        let cookie = self.cookie();
        Client {
            base: base.into(),
            http: self.http.clone(),
            cookie: Mutex::new(cookie),
        }
    }

    /// This client holding `cookie` (`cohort_session=...`), as a replayed or stolen cookie would.
    pub fn with_cookie(self, cookie: impl Into<String>) -> Self {
        *self.cookie.lock().expect("cookie lock") = Some(cookie.into());
        self
    }

    /// Signs this client in as `username`, creating the account first if there is none.
    pub async fn sign_in_as(&self, username: &str) {
        let credentials =
            serde_json::json!({"username": username, "password": format!("pw-{username}")});
        let created = self.post("/accounts", credentials.clone()).await;
        assert!(
            matches!(created.status, 201 | 409),
            "creating the account {username}: {}",
            created.text
        );
        let signed_in = self.post("/sessions", credentials).await;
        assert_eq!(
            signed_in.status, 200,
            "signing in as {username}: {}",
            signed_in.text
        );
    }

    /// Signs this client in as the shop's admin, who may set the stock.
    pub async fn sign_in_admin(&self) {
        assert!(
            std::env::var("SHOP_ADMINS")
                .is_ok_and(|admins| admins.split(',').any(|a| a.trim() == ADMIN)),
            "SHOP_ADMINS must list `{ADMIN}` (cargo sets it from .cargo/config.toml)"
        );
        self.sign_in_as(ADMIN).await;
    }

    /// As a signed-in admin, stocks one `sku` and orders it: the example app then emits an
    /// `order_placed` event.
    pub async fn place_one_order(&self, sku: &str) {
        let stocked = self.put(&format!("/stock/{sku}"), json!({"qty": 1})).await;
        assert_eq!(stocked.status, 200, "{}", stocked.text);
        let order = self.post("/orders", json!({"sku": sku, "qty": 1})).await;
        assert_eq!(order.status, 201, "{}", order.text);
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The session cookie (`cohort_session=...`) the client holds.
    pub fn cookie(&self) -> Option<String> {
        self.cookie.lock().expect("cookie lock").clone()
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body.to_string())).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PUT, path, Some(body.to_string())).await
    }

    /// Sends `body` as it is (malformed JSON included).
    pub async fn send(&self, method: Method, path: &str, body: Option<String>) -> Reply {
        self.send_with(method, path, body, &[]).await
    }

    /// Posts `body` with these extra headers.
    pub async fn post_with(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Reply {
        self.send_with(Method::POST, path, Some(body.to_string()), headers)
            .await
    }

    /// Sends `body` as it is, with these extra headers.
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        if let Some(cookie) = self.cookie() {
            request = request.header(COOKIE, cookie);
        }
        let response = request
            .send()
            .await
            .expect("the request reaches the server");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        self.keep_cookie(&headers);
        let text = response.text().await.expect("the body arrives");
        Reply::new(status, headers, text)
    }

    fn keep_cookie(&self, headers: &HeaderMap) {
        for value in headers.get_all(SET_COOKIE) {
            let Some(pair) = value.to_str().ok().and_then(|v| v.split(';').next()) else {
                continue;
            };
            let Some(id) = pair.strip_prefix("cohort_session=") else {
                continue;
            };
            *self.cookie.lock().expect("cookie lock") = (!id.is_empty()).then(|| pair.to_owned());
        }
    }
}

/// How long the audit may take to count the orders placed: events are delivered asynchronously,
/// and retried after a crash or a restart.
const AUDIT_PATIENCE: Duration = Duration::from_secs(30);

/// Polls the example app's `/audit` until it has seen exactly `orders` orders, and returns it.
pub async fn wait_for_audit(client: &Client, orders: u64) -> Value {
    let what = format!("the audit must see {orders} orders");
    eventually_ok(&what, AUDIT_PATIENCE, async || {
        let reply = client.get("/audit").await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        if reply.body["orders_seen"] == orders {
            Ok(reply.body)
        } else {
            Err(format!("it saw {}", reply.text))
        }
    })
    .await
}

/// Asserts that `reply` is a problem document (RFC 9457) of `status`, from a named instance.
pub fn assert_problem(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(
        reply.content_type(),
        Some("application/problem+json"),
        "{}",
        reply.text
    );
    assert_eq!(reply.body["status"], status, "{}", reply.text);
    assert!(
        reply.body["title"].is_string() && reply.body["type"].is_string(),
        "{}",
        reply.text
    );
    assert!(
        reply.instance().is_some(),
        "every response names the instance"
    );
}
