//! Cohort's own settings as an operator writes them: the `COHORT_*` variables and the keys of
//! `[cohort]` in the settings file, each key its variable's name without the prefix, in lower
//! case (`COHORT_COMMAND_TIMEOUT` is `command_timeout`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Config, LogFormat, StreamStorage};
use crate::cluster_key::ClusterKey;
use crate::error::Error;
use crate::settings::{FromText, List, Parsed, Span, Table, Vars, fields_of};
use crate::tls::TlsFiles;

/// The table of the settings file, and the prefix of the variables.
const TABLE: &str = "cohort";

/// A key left out keeps [`Config::default`]'s value.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Keys {
    http_addr: Option<Parsed<Listen>>,
    instance_id: Option<String>,
    nats_url: Option<String>,
    redis_url: Option<String>,
    subject_prefix: Option<String>,
    services: Option<List<String>>,
    allow_local_state: Option<bool>,
    allow_empty: Option<bool>,
    command_timeout: Option<Parsed<Span>>,
    shutdown_grace: Option<Parsed<Span>>,
    shutdown_delay: Option<Parsed<Span>>,
    body_limit: Option<usize>,
    session_ttl: Option<Parsed<Span>>,
    session_secure: Option<bool>,
    event_max_attempts: Option<u32>,
    event_backoff: Option<List<Span>>,
    event_retention: Option<Parsed<Span>>,
    stream_replicas: Option<usize>,
    dedupe_ttl: Option<Parsed<Span>>,
    idempotency_ttl: Option<Parsed<Span>>,
    stream_storage: Option<Parsed<StreamStorage>>,
    duplicate_window: Option<Parsed<Span>>,
    event_ack_wait: Option<Parsed<Span>>,
    nats_creds: Option<PathBuf>,
    nats_nkey: Option<PathBuf>,
    nats_tls_ca: Option<PathBuf>,
    nats_tls_cert: Option<PathBuf>,
    nats_tls_key: Option<PathBuf>,
    redis_tls_ca: Option<PathBuf>,
    redis_tls_cert: Option<PathBuf>,
    redis_tls_key: Option<PathBuf>,
    cluster_key: Option<Parsed<ClusterKey>>,
    cluster_key_previous: Option<Parsed<ClusterKey>>,
    allow_unsigned: Option<bool>,
    http_header_timeout: Option<Parsed<Span>>,
    http_body_timeout: Option<Parsed<Span>>,
    http_idle_timeout: Option<Parsed<Span>>,
    http_max_connections: Option<usize>,
    http_max_header_bytes: Option<usize>,
    http_max_headers: Option<usize>,
    dashboard: Option<bool>,
    metrics: Option<bool>,
    metrics_addr: Option<Parsed<SocketAddr>>,
    log_format: Option<Parsed<LogFormat>>,
    deployment_version: Option<String>,
}

/// Cohort's configuration from the settings file and the variables `vars` gives.
pub(super) fn read(vars: Vars) -> Result<Config, Error> {
    let table = Table::read(vars, TABLE, fields_of::<Keys>().unwrap_or_default())?;
    let keys: Keys = table.extract()?;
    let config = keys.into_config();
    check_limits(&table, &config)?;
    check_metrics(&table, &config)?;
    Ok(config)
}

impl Keys {
    fn into_config(self) -> Config {
        let mut config = Config::default();
        set(
            &mut config.http_addr,
            parsed(self.http_addr).map(|Listen(addr)| addr),
        );
        set(&mut config.instance_id, self.instance_id);
        config.nats_url = self.nats_url;
        config.redis_url = self.redis_url;
        set(&mut config.subject_prefix, self.subject_prefix);
        config.services = self.services.map(|List(services)| services);
        set(&mut config.allow_local_state, self.allow_local_state);
        set(&mut config.allow_empty, self.allow_empty);
        set(&mut config.command_timeout, duration(self.command_timeout));
        set(&mut config.shutdown_grace, duration(self.shutdown_grace));
        set(&mut config.shutdown_delay, duration(self.shutdown_delay));
        set(&mut config.body_limit, self.body_limit);
        set(&mut config.session_ttl, duration(self.session_ttl));
        set(&mut config.session_cookie_secure, self.session_secure);
        set(&mut config.event_max_attempts, self.event_max_attempts);
        let backoff = self.event_backoff.map(|List(waits)| waits);
        set(
            &mut config.event_backoff,
            backoff.map(|waits| waits.into_iter().map(|Span(wait)| wait).collect()),
        );
        set(&mut config.event_retention, duration(self.event_retention));
        set(&mut config.stream_replicas, self.stream_replicas);
        set(&mut config.dedupe_ttl, duration(self.dedupe_ttl));
        set(&mut config.idempotency_ttl, duration(self.idempotency_ttl));
        set(&mut config.stream_storage, parsed(self.stream_storage));
        set(
            &mut config.duplicate_window,
            duration(self.duplicate_window),
        );
        set(&mut config.event_ack_wait, duration(self.event_ack_wait));
        config.nats_creds = self.nats_creds;
        config.nats_nkey = self.nats_nkey;
        config.nats_tls = TlsFiles {
            ca: self.nats_tls_ca,
            cert: self.nats_tls_cert,
            key: self.nats_tls_key,
        };
        config.redis_tls = TlsFiles {
            ca: self.redis_tls_ca,
            cert: self.redis_tls_cert,
            key: self.redis_tls_key,
        };
        config.cluster_key = parsed(self.cluster_key);
        config.cluster_key_previous = parsed(self.cluster_key_previous);
        set(&mut config.allow_unsigned, self.allow_unsigned);
        set(
            &mut config.http_header_timeout,
            duration(self.http_header_timeout),
        );
        set(
            &mut config.http_body_timeout,
            duration(self.http_body_timeout),
        );
        set(
            &mut config.http_idle_timeout,
            duration(self.http_idle_timeout),
        );
        set(&mut config.http_max_connections, self.http_max_connections);
        set(
            &mut config.http_max_header_bytes,
            self.http_max_header_bytes,
        );
        set(&mut config.http_max_headers, self.http_max_headers);
        set(&mut config.dashboard, self.dashboard);
        set(&mut config.metrics, self.metrics);
        config.metrics_addr = parsed(self.metrics_addr);
        set(&mut config.log_format, parsed(self.log_format));
        config.deployment_version = self.deployment_version;
        config
    }
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

fn parsed<T>(value: Option<Parsed<T>>) -> Option<T> {
    value.map(|Parsed(value)| value)
}

fn duration(value: Option<Parsed<Span>>) -> Option<Duration> {
    value.map(|Parsed(Span(duration))| duration)
}

/// Settings that zero makes useless, so it is refused here: the limits against slow and greedy
/// clients would refuse every request, and a unit's marker would be gone as it is written.
fn check_limits(table: &Table, config: &Config) -> Result<(), Error> {
    let durations = [
        ("http_header_timeout", config.http_header_timeout),
        ("http_body_timeout", config.http_body_timeout),
        ("http_idle_timeout", config.http_idle_timeout),
        ("dedupe_ttl", config.dedupe_ttl),
    ];
    if let Some((key, _)) = durations.iter().find(|(_, limit)| limit.is_zero()) {
        return Err(table.invalid(key, "expected a duration above zero"));
    }
    let counts = [
        ("http_max_connections", config.http_max_connections),
        ("http_max_header_bytes", config.http_max_header_bytes),
        ("http_max_headers", config.http_max_headers),
    ];
    if let Some((key, _)) = counts.iter().find(|(_, limit)| *limit == 0) {
        return Err(table.invalid(key, "expected a whole number above zero"));
    }
    Ok(())
}

/// An address for metrics that are off is a contradiction, refused rather than guessed.
fn check_metrics(table: &Table, config: &Config) -> Result<(), Error> {
    if config.metrics_addr.is_some() && !config.metrics {
        return Err(crate::settings::invalid_config(format!(
            "{} is set but {} is off: unset one of them",
            table.origin("metrics_addr"),
            table.origin("metrics")
        )));
    }
    Ok(())
}

/// `COHORT_HTTP_ADDR`: an address, or `off` for a worker without HTTP.
struct Listen(Option<SocketAddr>);

impl FromText for Listen {
    fn from_text(text: &str) -> Result<Self, String> {
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(Listen(None));
        }
        address(text, "`0.0.0.0:8080`, or `off`").map(|addr| Listen(Some(addr)))
    }
}

impl FromText for SocketAddr {
    fn from_text(text: &str) -> Result<Self, String> {
        address(text, "`0.0.0.0:9090`")
    }
}

fn address(text: &str, example: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("expected an address such as {example}"))
}

impl FromText for StreamStorage {
    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "file" => Ok(StreamStorage::File),
            "memory" => Ok(StreamStorage::Memory),
            _ => Err("expected `file` or `memory`".to_owned()),
        }
    }
}

impl FromText for LogFormat {
    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("expected `text` or `json`".to_owned()),
        }
    }
}

/// The key is checked without repeating it: the message says only what is wrong.
impl FromText for ClusterKey {
    fn from_text(text: &str) -> Result<Self, String> {
        ClusterKey::new(text).map_err(|err| err.message().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBERNETES: &str = include_str!("../../../deploy/kubernetes.yaml");

    #[test]
    fn the_kubernetes_example_names_only_real_variables() {
        let keys = fields_of::<Keys>().expect("a struct");
        let names = KUBERNETES
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("COHORT_") && *word != crate::settings::CONFIG_FILE);
        for name in names {
            let key = name["COHORT_".len()..].trim_end_matches("_FILE");
            assert!(
                keys.contains(&key.to_ascii_lowercase().as_str()),
                "{name} is no setting"
            );
        }
    }

    #[test]
    fn the_kubernetes_example_settings_file_is_valid() {
        let start = KUBERNETES
            .find("settings.toml: |")
            .expect("the settings file");
        let text: String = KUBERNETES[start..]
            .lines()
            .skip(1)
            .take_while(|line| line.is_empty() || line.starts_with("    "))
            .map(|line| format!("{}\n", line.trim_start()))
            .collect();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("settings.toml");
        std::fs::write(&path, &text).expect("written");
        let path = path.display().to_string();
        let config =
            read(&|name: &str| (name == "COHORT_CONFIG").then(|| path.clone())).expect("valid");
        assert_eq!(config.stream_replicas, 3);
        assert_eq!(
            config.http_addr,
            Some(SocketAddr::from(([0, 0, 0, 0], 8080)))
        );
        assert!(text.contains("[shop]"), "{text}");
    }
}
