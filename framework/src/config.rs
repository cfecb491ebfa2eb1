//! Configuration: Cohort's own settings, read from the settings file and the `COHORT_*`
//! environment variables, overridable in code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod keys;

use crate::cluster_key::ClusterKey;
use crate::error::Error;
use crate::message::random_hex;
use crate::redact::mask_urls;
use crate::tls::TlsFiles;

/// Everything an instance can be told. [`Config::default`] is a complete single-instance
/// deployment: embedded broker and store, HTTP on 127.0.0.1:8080.
///
/// Build one with [`Config::from_env`] or [`Config::default`], then change its fields (new fields
/// may come in any release, so it cannot be written as a struct literal):
///
/// ```
/// let mut config = cohort::Config::default();
/// config.http_addr = None;
/// config.command_timeout = std::time::Duration::from_secs(5);
/// ```
///
/// Its `Debug` masks the passwords and tokens in the server URLs, so a configuration can be logged.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// `COHORT_HTTP_ADDR` (default `127.0.0.1:8080`; `off` runs a worker without HTTP).
    pub http_addr: Option<SocketAddr>,
    /// `COHORT_INSTANCE_ID` (default: generated, unique per process).
    pub instance_id: String,
    /// `COHORT_NATS_URL`: comma-separated NATS servers. Unset: the embedded broker.
    pub nats_url: Option<String>,
    /// `COHORT_REDIS_URL`: the Redis server. Unset: the embedded store.
    pub redis_url: Option<String>,
    /// `COHORT_SUBJECT_PREFIX` (default `cohort`): the first token of every subject and key.
    pub subject_prefix: String,
    /// `COHORT_SERVICES`: comma list; this instance runs only these services' commands and
    /// subscriptions (its HTTP layer still routes every command). Unset: all.
    pub services: Option<Vec<String>>,
    /// `COHORT_ALLOW_LOCAL_STATE=true`: start a distributed broker with the embedded store anyway.
    pub allow_local_state: bool,
    /// `COHORT_ALLOW_EMPTY=true`: start although the binary registers no command and no
    /// subscription (an instance that only calls commands). Without it such a start is refused:
    /// the usual cause is handlers in a library crate that `main` never references.
    pub allow_empty: bool,
    /// `COHORT_COMMAND_TIMEOUT` (default `30s`): deadline of a command that sets none.
    pub command_timeout: Duration,
    /// `COHORT_SHUTDOWN_GRACE` (default `30s`): how long shutdown waits for work in flight.
    pub shutdown_grace: Duration,
    /// `COHORT_SHUTDOWN_DELAY` (default `0s`): how long `/readyz` answers 503 before the HTTP
    /// listener closes, so a load balancer notices and stops sending first.
    pub shutdown_delay: Duration,
    /// `COHORT_BODY_LIMIT` (default `1048576` bytes): larger HTTP bodies get a 413.
    pub body_limit: usize,
    /// `COHORT_SESSION_TTL` (default `24h`): a session expires this long after its last write.
    pub session_ttl: Duration,
    /// `COHORT_SESSION_SECURE` (default `true`): the session cookie is marked `Secure`, so browsers
    /// send it over HTTPS only (and to `http://localhost`, which they treat as secure). `false`
    /// opts out, for plain HTTP on another host.
    pub session_cookie_secure: bool,
    /// `COHORT_EVENT_MAX_ATTEMPTS` (default `5`): deliveries before an event is dead-lettered.
    pub event_max_attempts: u32,
    /// `COHORT_EVENT_BACKOFF` (default `1s,5s,30s`): waits before redeliveries; the last repeats.
    pub event_backoff: Vec<Duration>,
    /// `COHORT_EVENT_RETENTION` (default `7d`): how long the events stream keeps an event, when
    /// this instance creates the stream.
    pub event_retention: Duration,
    /// `COHORT_STREAM_REPLICAS` (default `1`): copies of the event streams in a NATS cluster, when
    /// this instance creates them (3 for no single point of failure).
    pub stream_replicas: usize,
    /// `COHORT_DEDUPE_TTL` (default `24h`): how long the proof that a unit of work was applied is
    /// kept (a delivery's event id, an idempotency key); a retry later than this applies it again.
    pub dedupe_ttl: Duration,
    /// `COHORT_IDEMPOTENCY_TTL` (default `24h`): how long the reply to a request with an
    /// `Idempotency-Key` is kept to answer its repeats.
    pub idempotency_ttl: Duration,
    /// `COHORT_STREAM_STORAGE` (default `file`): where the event streams keep events, when this
    /// instance creates them; `memory` loses them when nats-server stops.
    pub stream_storage: StreamStorage,
    /// `COHORT_DUPLICATE_WINDOW` (default `2m`): how long the events stream drops a second publish
    /// of the same event id, when this instance creates it.
    pub duplicate_window: Duration,
    /// `COHORT_EVENT_ACK_WAIT` (default `30s`): how long an instance may hold an event before
    /// the broker assumes it died and hands the event to another.
    pub event_ack_wait: Duration,
    // Authentication and TLS of the connections; user, password and token are in the URLs.
    /// `COHORT_NATS_CREDS`: path of a NATS `.creds` file (user JWT and nkey seed), for servers
    /// that authenticate with JWTs (operator mode).
    pub nats_creds: Option<PathBuf>,
    /// `COHORT_NATS_NKEY`: path of a file holding the nkey seed (`SU...`) this instance signs in
    /// with; the server lists its public key (`U...`) among its nkey users.
    pub nats_nkey: Option<PathBuf>,
    /// `COHORT_NATS_TLS_CA`, `COHORT_NATS_TLS_CERT`, `COHORT_NATS_TLS_KEY`: PEM files of TLS to
    /// NATS; any of them makes TLS required (as does a `tls://` URL).
    pub nats_tls: TlsFiles,
    /// `COHORT_REDIS_TLS_CA`, `COHORT_REDIS_TLS_CERT`, `COHORT_REDIS_TLS_KEY`: PEM files of TLS to
    /// Redis, for a `rediss://` URL (without a CA file, the system's roots are trusted).
    pub redis_tls: TlsFiles,
    /// `COHORT_CLUSTER_KEY`: the secret every instance signs its NATS messages with, and checks
    /// theirs against. Required with `COHORT_NATS_URL` unless `allow_unsigned`.
    pub cluster_key: Option<ClusterKey>,
    /// `COHORT_CLUSTER_KEY_PREVIOUS`: a second key accepted when checking, never used to sign,
    /// for rotating the cluster key without downtime.
    pub cluster_key_previous: Option<ClusterKey>,
    /// `COHORT_ALLOW_UNSIGNED=true`: start with NATS but without a cluster key; any client of the
    /// NATS server can then call commands and publish events as any principal.
    pub allow_unsigned: bool,
    /// `COHORT_HTTP_HEADER_TIMEOUT` (default `10s`): a connection that has not sent a whole
    /// request head this long after it opened, or after the first bytes of a later request, is
    /// closed (slowloris).
    pub http_header_timeout: Duration,
    /// `COHORT_HTTP_BODY_TIMEOUT` (default `30s`): a request body not received whole within this
    /// gets a 408 and its connection is closed.
    pub http_body_timeout: Duration,
    /// `COHORT_HTTP_IDLE_TIMEOUT` (default `75s`): a keep-alive connection that sends nothing
    /// this long after a response is closed. Keep it longer than the load balancer's own.
    pub http_idle_timeout: Duration,
    /// `COHORT_HTTP_MAX_CONNECTIONS` (default `10000`): open HTTP connections past this are
    /// answered 503 and closed. Keep it below the process's file limit (`ulimit -n`).
    pub http_max_connections: usize,
    /// `COHORT_HTTP_MAX_HEADER_BYTES` (default `16384`): a larger request line and headers get
    /// a 431 from hyper.
    pub http_max_header_bytes: usize,
    /// `COHORT_HTTP_MAX_HEADERS` (default `100`): a request with more header fields gets a 431.
    pub http_max_headers: usize,
    /// `COHORT_DASHBOARD=true`: serve the live dashboard at `/_cohort` (default off). Guard it
    /// with [`App::dashboard`](crate::App::dashboard): without a guard, anyone who reaches the
    /// HTTP port sees it.
    pub dashboard: bool,
    /// `COHORT_METRICS` (default `on`): Prometheus metrics at `GET /metrics`; `off` measures
    /// nothing and serves no `/metrics`.
    pub metrics: bool,
    /// `COHORT_METRICS_ADDR`: serve `/metrics` on a listener of its own at this address instead of
    /// the HTTP one (a worker without HTTP can serve metrics this way). Unset: the HTTP listener.
    pub metrics_addr: Option<SocketAddr>,
    // Observability.
    /// `COHORT_LOG_FORMAT` (default `text`): `json` writes one JSON object a line, with the
    /// fields of the spans it is logged in (its `trace_id` among them).
    pub log_format: LogFormat,
    // Tasks.
    /// `COHORT_DEPLOYMENT_VERSION` (default: the version of the crate that declares each task):
    /// a `#[task(on_start)]` runs once per value across the cluster.
    pub deployment_version: Option<String>,
}

/// How [`App::run`](crate::App::run) writes the log to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Lines for people: time, level, the spans with their trace ids, target and message.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// Where JetStream keeps the event streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamStorage {
    /// On disk: events survive a restart of nats-server (and, once synced, of its machine).
    #[default]
    File,
    /// In memory: faster, and gone when nats-server stops.
    Memory,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            instance_id: random_hex(4),
            nats_url: None,
            redis_url: None,
            subject_prefix: "cohort".to_owned(),
            services: None,
            allow_local_state: false,
            allow_empty: false,
            command_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            body_limit: 1 << 20,
            session_ttl: Duration::from_secs(24 * 3600),
            session_cookie_secure: true,
            event_max_attempts: 5,
            event_backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
            event_ack_wait: Duration::from_secs(30),
            dedupe_ttl: Duration::from_secs(24 * 3600),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            stream_storage: StreamStorage::File,
            duplicate_window: Duration::from_secs(120),
            event_retention: Duration::from_secs(7 * 24 * 3600),
            stream_replicas: 1,
            nats_creds: None,
            nats_nkey: None,
            nats_tls: TlsFiles::default(),
            redis_tls: TlsFiles::default(),
            cluster_key: None,
            cluster_key_previous: None,
            allow_unsigned: false,
            http_header_timeout: Duration::from_secs(10),
            http_body_timeout: Duration::from_secs(30),
            http_idle_timeout: Duration::from_secs(75),
            http_max_connections: 10_000,
            http_max_header_bytes: 16 * 1024,
            http_max_headers: 100,
            dashboard: false,
            metrics: true,
            metrics_addr: None,
            log_format: LogFormat::Text,
            deployment_version: None,
        }
    }
}

impl Config {
    /// Reads Cohort's settings: `[cohort]` in the TOML file `COHORT_CONFIG` names, then every
    /// `COHORT_*` variable that is set, then the files `COHORT_*_FILE` variables name. A value
    /// that does not parse is an error naming its variable (or key and file), never its value.
    pub fn from_env() -> Result<Config, Error> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`Config::from_env`], from any source of variables (tests use a map).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
        keys::read(&var)
    }

    /// Whether this instance runs `service`'s commands and subscriptions.
    pub fn runs_service(&self, service: &str) -> bool {
        self.services
            .as_ref()
            .is_none_or(|services| services.iter().any(|s| s == service))
    }
}

/// Written out rather than derived, to mask the credentials in the URLs; destructured, so that a
/// new field cannot be left out by accident.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Config {
            http_addr,
            instance_id,
            nats_url,
            redis_url,
            subject_prefix,
            services,
            allow_local_state,
            allow_empty,
            command_timeout,
            shutdown_grace,
            shutdown_delay,
            body_limit,
            session_ttl,
            session_cookie_secure,
            event_max_attempts,
            event_backoff,
            event_retention,
            stream_replicas,
            dedupe_ttl,
            idempotency_ttl,
            stream_storage,
            duplicate_window,
            event_ack_wait,
            nats_creds,
            nats_nkey,
            nats_tls,
            redis_tls,
            cluster_key,
            cluster_key_previous,
            allow_unsigned,
            http_header_timeout,
            http_body_timeout,
            http_idle_timeout,
            http_max_connections,
            http_max_header_bytes,
            http_max_headers,
            dashboard,
            metrics,
            metrics_addr,
            log_format,
            deployment_version,
        } = self;
        f.debug_struct("Config")
            .field("http_addr", http_addr)
            .field("instance_id", instance_id)
            .field("nats_url", &nats_url.as_deref().map(mask_urls))
            .field("redis_url", &redis_url.as_deref().map(mask_urls))
            .field("subject_prefix", subject_prefix)
            .field("services", services)
            .field("allow_local_state", allow_local_state)
            .field("allow_empty", allow_empty)
            .field("command_timeout", command_timeout)
            .field("shutdown_grace", shutdown_grace)
            .field("shutdown_delay", shutdown_delay)
            .field("body_limit", body_limit)
            .field("session_ttl", session_ttl)
            .field("session_cookie_secure", session_cookie_secure)
            .field("event_max_attempts", event_max_attempts)
            .field("event_backoff", event_backoff)
            .field("event_retention", event_retention)
            .field("stream_replicas", stream_replicas)
            .field("dedupe_ttl", dedupe_ttl)
            .field("idempotency_ttl", idempotency_ttl)
            .field("stream_storage", stream_storage)
            .field("duplicate_window", duplicate_window)
            .field("event_ack_wait", event_ack_wait)
            .field("nats_creds", nats_creds)
            .field("nats_nkey", nats_nkey)
            .field("nats_tls", nats_tls)
            .field("redis_tls", redis_tls)
            .field("cluster_key", cluster_key)
            .field("cluster_key_previous", cluster_key_previous)
            .field("allow_unsigned", allow_unsigned)
            .field("http_header_timeout", http_header_timeout)
            .field("http_body_timeout", http_body_timeout)
            .field("http_idle_timeout", http_idle_timeout)
            .field("http_max_connections", http_max_connections)
            .field("http_max_header_bytes", http_max_header_bytes)
            .field("http_max_headers", http_max_headers)
            .field("dashboard", dashboard)
            .field("metrics", metrics)
            .field("metrics_addr", metrics_addr)
            .field("log_format", log_format)
            .field("deployment_version", deployment_version)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Config, Error> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_vars(|name| vars.get(name).cloned())
    }

    /// A file `name` holding `text` in `dir`; its path.
    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("the file is written");
        path.display().to_string()
    }

    #[test]
    fn the_file_is_read_and_the_environment_wins_over_it() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = file(
            &dir,
            "app.toml",
            "[cohort]\ncommand_timeout = \"5s\"\nservices = [\"orders\", \"audit\"]\n\
             stream_replicas = 3\nallow_empty = true\nevent_backoff = [\"10ms\", \"1s\"]\n\n\
             [shop]\nanything = 1\n",
        );
        let config =
            from(&[("COHORT_CONFIG", &path), ("COHORT_STREAM_REPLICAS", "5")]).expect("valid");
        assert_eq!(config.command_timeout, Duration::from_secs(5));
        let services = vec!["orders".to_owned(), "audit".to_owned()];
        assert_eq!(config.services, Some(services));
        assert_eq!(config.stream_replicas, 5);
        assert!(config.allow_empty);
        assert_eq!(
            config.event_backoff,
            vec![Duration::from_millis(10), Duration::from_secs(1)]
        );
    }

    #[test]
    fn a_secret_is_read_from_the_file_its_file_variable_names() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let key = "s".repeat(40);
        let key_file = file(&dir, "cluster-key", &format!("{key}\n"));
        let url = "redis://app:r3dis-pass@redis:6379/0";
        let url_file = file(&dir, "redis-url", &format!("{url}\r\n"));
        let config = from(&[
            ("COHORT_CLUSTER_KEY_FILE", &key_file),
            ("COHORT_REDIS_URL_FILE", &url_file),
        ])
        .expect("valid");
        assert_eq!(
            config.cluster_key.as_ref().map(ClusterKey::expose),
            Some(key.as_str())
        );
        assert_eq!(config.redis_url.as_deref(), Some(url));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("ssss") && !shown.contains("r3dis-pass"),
            "{shown}"
        );
    }

    #[test]
    fn a_value_and_its_file_are_not_both_accepted() {
        let err = from(&[
            ("COHORT_NATS_URL", "nats://n:4222"),
            ("COHORT_NATS_URL_FILE", "/run/secrets/nats-url"),
        ])
        .expect_err("both set");
        assert!(
            err.message()
                .contains("COHORT_NATS_URL and COHORT_NATS_URL_FILE"),
            "{err}"
        );
        assert_eq!(err.code(), "invalid_config");
    }

    #[test]
    fn a_file_that_cannot_be_read_is_named() {
        for name in ["COHORT_CONFIG", "COHORT_CLUSTER_KEY_FILE"] {
            let err = from(&[(name, "/nonexistent/cohort-setting")]).expect_err("no such file");
            let expected = format!("{name}=/nonexistent/cohort-setting");
            assert!(err.message().contains(&expected), "{err}");
        }
    }

    #[test]
    fn a_bad_secret_names_where_it_came_from_and_never_shows_it() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let short = file(&dir, "cluster-key", "short-s3cret\n");
        let err = from(&[("COHORT_CLUSTER_KEY_FILE", &short)]).expect_err("too short");
        assert!(
            err.message().starts_with("COHORT_CLUSTER_KEY_FILE "),
            "{err}"
        );
        assert!(!err.message().contains("s3cret"), "{err}");
        let path = file(
            &dir,
            "app.toml",
            "[cohort]\ncluster_key = \"short-s3cret\"\n",
        );
        let err = from(&[("COHORT_CONFIG", &path)]).expect_err("too short");
        assert!(
            err.message()
                .starts_with(&format!("`cohort.cluster_key` in {path} ")),
            "{err}"
        );
        assert!(!err.message().contains("s3cret"), "{err}");
    }

    #[test]
    fn a_bad_file_names_the_line_or_the_key_never_the_text() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let broken = file(
            &dir,
            "broken.toml",
            "[cohort]\nredis_url = \"redis://:s3cret@h\n",
        );
        let err = from(&[("COHORT_CONFIG", &broken)]).expect_err("not TOML");
        assert!(err.message().contains("not valid TOML at line 2"), "{err}");
        assert!(!err.message().contains("s3cret"), "{err}");
        let typo = file(&dir, "typo.toml", "[cohort]\ncomand_timeout = \"5s\"\n");
        let err = from(&[("COHORT_CONFIG", &typo)]).expect_err("unknown key");
        assert!(err.message().contains("`comand_timeout`"), "{err}");
        let wrong = file(
            &dir,
            "wrong.toml",
            "[cohort]\nstream_replicas = \"three\"\n",
        );
        let err = from(&[("COHORT_CONFIG", &wrong)]).expect_err("not a number");
        assert!(
            err.message()
                .contains(&format!("`cohort.stream_replicas` in {wrong}")),
            "{err}"
        );
        assert!(!err.message().contains("three"), "{err}");
    }

    #[test]
    fn defaults_are_a_complete_single_instance() {
        let config = from(&[]).expect("defaults parse");
        assert_eq!(
            config.http_addr,
            Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        assert!(config.nats_url.is_none() && config.redis_url.is_none());
        assert!(config.runs_service("anything"));
    }

    #[test]
    fn reads_every_variable() {
        let config = from(&[
            ("COHORT_HTTP_ADDR", "off"),
            ("COHORT_INSTANCE_ID", "a"),
            ("COHORT_NATS_URL", "nats://x:1,nats://y:2"),
            ("COHORT_SERVICES", "orders, audit"),
            ("COHORT_COMMAND_TIMEOUT", "250ms"),
            ("COHORT_EVENT_BACKOFF", "10ms,1s"),
            ("COHORT_ALLOW_LOCAL_STATE", "true"),
            ("COHORT_ALLOW_EMPTY", "yes"),
            ("COHORT_EVENT_RETENTION", "2d"),
            ("COHORT_STREAM_REPLICAS", "3"),
            ("COHORT_STREAM_STORAGE", "Memory"),
            ("COHORT_DUPLICATE_WINDOW", "10m"),
            ("COHORT_DASHBOARD", "true"),
        ])
        .expect("valid");
        assert_eq!(config.http_addr, None);
        assert!(config.dashboard && !Config::default().dashboard);
        assert_eq!(config.instance_id, "a");
        assert!(config.runs_service("audit") && !config.runs_service("echo"));
        assert_eq!(config.command_timeout, Duration::from_millis(250));
        assert_eq!(
            config.event_backoff,
            vec![Duration::from_millis(10), Duration::from_secs(1)]
        );
        assert!(config.allow_local_state && config.allow_empty);
        assert_eq!(config.event_retention, Duration::from_secs(2 * 24 * 3600));
        assert_eq!(config.stream_replicas, 3);
        assert_eq!(config.stream_storage, StreamStorage::Memory);
        assert_eq!(config.duplicate_window, Duration::from_secs(600));
    }

    #[test]
    fn reads_the_authentication_and_tls_files() {
        let config = from(&[
            ("COHORT_NATS_CREDS", "/run/secrets/app.creds"),
            ("COHORT_NATS_NKEY", "/run/secrets/app.nk"),
            ("COHORT_NATS_TLS_CA", "/etc/nats/ca.pem"),
            ("COHORT_REDIS_TLS_CERT", "/etc/redis/client.pem"),
            ("COHORT_REDIS_TLS_KEY", "/etc/redis/client-key.pem"),
        ])
        .expect("valid");
        assert_eq!(
            config.nats_creds,
            Some(PathBuf::from("/run/secrets/app.creds"))
        );
        assert_eq!(config.nats_nkey, Some(PathBuf::from("/run/secrets/app.nk")));
        assert_eq!(config.nats_tls.ca, Some(PathBuf::from("/etc/nats/ca.pem")));
        assert!(config.nats_tls.cert.is_none() && config.redis_tls.ca.is_none());
        assert_eq!(
            config.redis_tls.key,
            Some(PathBuf::from("/etc/redis/client-key.pem"))
        );
    }

    #[test]
    fn debug_masks_the_credentials_in_the_urls() {
        let config = from(&[
            (
                "COHORT_NATS_URL",
                "nats://app:n4ts-pass@h1:4222,nats://t0ken@h2:4222",
            ),
            ("COHORT_REDIS_URL", "rediss://app:r3dis-pass@redis:6380/0"),
        ])
        .expect("valid");
        let shown = format!("{config:?}");
        for secret in ["n4ts-pass", "t0ken", "r3dis-pass"] {
            assert!(!shown.contains(secret), "{secret} printed: {shown}");
        }
        assert!(shown.contains("nats://app:***@h1:4222"), "{shown}");
        assert!(shown.contains("rediss://app:***@redis:6380/0"), "{shown}");
    }

    #[test]
    fn session_cookies_are_secure_unless_opted_out() {
        assert!(from(&[]).expect("defaults").session_cookie_secure);
        let plain = from(&[("COHORT_SESSION_SECURE", "false")]).expect("valid");
        assert!(!plain.session_cookie_secure);
        let err = from(&[("COHORT_SESSION_SECURE", "maybe")]).expect_err("invalid");
        assert!(err.message().contains("COHORT_SESSION_SECURE"), "{err}");
    }

    #[test]
    fn reads_the_cluster_keys_and_never_shows_them() {
        let key = "k".repeat(40);
        let previous = "p".repeat(32);
        let config = from(&[
            ("COHORT_CLUSTER_KEY", &key),
            ("COHORT_CLUSTER_KEY_PREVIOUS", &previous),
            ("COHORT_ALLOW_UNSIGNED", "true"),
        ])
        .expect("valid");
        assert_eq!(
            config.cluster_key.as_ref().map(ClusterKey::expose),
            Some(key.as_str())
        );
        assert_eq!(
            config.cluster_key_previous.as_ref().map(ClusterKey::expose),
            Some(previous.as_str())
        );
        assert!(config.allow_unsigned);
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("kkkk") && !shown.contains("pppp"),
            "{shown}"
        );
    }

    #[test]
    fn a_short_cluster_key_names_the_variable_without_repeating_it() {
        for name in ["COHORT_CLUSTER_KEY", "COHORT_CLUSTER_KEY_PREVIOUS"] {
            let err = from(&[(name, "short-secret")]).expect_err("too short");
            assert!(err.message().starts_with(name), "{err}");
            assert!(!err.message().contains("short-secret"), "{err}");
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = from(&[("COHORT_COMMAND_TIMEOUT", "soon")]).expect_err("invalid");
        assert!(err.message().contains("COHORT_COMMAND_TIMEOUT"), "{err}");
        let err = from(&[("COHORT_HTTP_ADDR", "localhost")]).expect_err("invalid");
        assert!(err.message().contains("COHORT_HTTP_ADDR"), "{err}");
    }

    #[test]
    fn reads_the_http_limits() {
        let config = from(&[
            ("COHORT_HTTP_HEADER_TIMEOUT", "2s"),
            ("COHORT_HTTP_BODY_TIMEOUT", "500ms"),
            ("COHORT_HTTP_IDLE_TIMEOUT", "1m"),
            ("COHORT_HTTP_MAX_CONNECTIONS", "64"),
            ("COHORT_HTTP_MAX_HEADER_BYTES", "8192"),
            ("COHORT_HTTP_MAX_HEADERS", "20"),
        ])
        .expect("valid");
        assert_eq!(config.http_header_timeout, Duration::from_secs(2));
        assert_eq!(config.http_body_timeout, Duration::from_millis(500));
        assert_eq!(config.http_idle_timeout, Duration::from_secs(60));
        assert_eq!(config.http_max_connections, 64);
        assert_eq!(config.http_max_header_bytes, 8192);
        assert_eq!(config.http_max_headers, 20);
    }

    #[test]
    fn metrics_are_on_and_can_move_or_be_turned_off() {
        let defaults = from(&[]).expect("defaults");
        assert!(defaults.metrics && defaults.metrics_addr.is_none());
        assert!(!from(&[("COHORT_METRICS", "off")]).expect("valid").metrics);
        let moved = from(&[("COHORT_METRICS_ADDR", "0.0.0.0:9090")]).expect("valid");
        assert_eq!(
            moved.metrics_addr,
            Some(SocketAddr::from(([0, 0, 0, 0], 9090)))
        );
        let err = from(&[("COHORT_METRICS_ADDR", "9090")]).expect_err("no host");
        assert!(err.message().contains("COHORT_METRICS_ADDR"), "{err}");
        let both = [
            ("COHORT_METRICS", "off"),
            ("COHORT_METRICS_ADDR", "127.0.0.1:9090"),
        ];
        assert_eq!(
            from(&both).expect_err("contradiction").code(),
            "invalid_config"
        );
    }

    #[test]
    fn zero_limits_are_refused_by_name() {
        for (name, zero) in [
            ("COHORT_HTTP_HEADER_TIMEOUT", "0s"),
            ("COHORT_DEDUPE_TTL", "0s"),
            ("COHORT_HTTP_IDLE_TIMEOUT", "0ms"),
            ("COHORT_HTTP_MAX_CONNECTIONS", "0"),
            ("COHORT_HTTP_MAX_HEADERS", "0"),
        ] {
            let err = from(&[(name, zero)]).expect_err("zero is refused");
            assert!(err.message().contains(name), "{err}");
            assert!(err.message().contains("above zero"), "{err}");
        }
        let err = from(&[("COHORT_HTTP_MAX_CONNECTIONS", "many")]).expect_err("invalid");
        assert!(
            err.message().contains("COHORT_HTTP_MAX_CONNECTIONS"),
            "{err}"
        );
    }
}
