//! Logs: installed by `App::run` unless the application installed its own subscriber.

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Dependencies whose debug and trace output carries secrets: async-nats logs its CONNECT (with
/// the password or token) and every message with its headers and body; hyper and h2 log request
/// headers (the session cookie); redis logs commands with their arguments.
const REVEALING_TARGETS: &[&str] = &[
    "async_nats",
    "redis",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "tokio_rustls",
];

/// Logs to stderr, filtered by `COHORT_LOG` or `RUST_LOG` (default `info`), e.g.
/// `COHORT_LOG=warn,cohort=debug`; the [`REVEALING_TARGETS`] never log below `info`, whatever the
/// filter says. Does nothing when a global subscriber is already set.
pub(crate) fn init() {
    let filter = std::env::var("COHORT_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(Level::INFO));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(filter)
        .with(secret_safe())
        .try_init();
}

/// Lets everything through but the debug and trace events of the [`REVEALING_TARGETS`]; it is
/// combined with the user's filter, so both must let an event through.
fn secret_safe() -> Targets {
    Targets::new().with_default(Level::TRACE).with_targets(
        REVEALING_TARGETS
            .iter()
            .map(|target| (*target, Level::INFO)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revealing_targets_stop_at_info() {
        let filter = secret_safe();
        assert!(!filter.would_enable("async_nats::connection", &Level::TRACE));
        assert!(!filter.would_enable("hyper::proto::h1", &Level::DEBUG));
        assert!(filter.would_enable("async_nats", &Level::INFO));
        assert!(filter.would_enable("cohort::broker", &Level::TRACE));
        assert!(filter.would_enable("my_app", &Level::TRACE));
    }
}
