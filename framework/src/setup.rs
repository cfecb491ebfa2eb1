//! What an instance checks, and what it connects to, before it serves.

use std::sync::Arc;

use crate::broker::MemoryBroker;
use crate::broker::spi::{Broker, Subjects};
use crate::config::Config;
use crate::error::Error;
use crate::registry::Registry;
use crate::state::MemoryStore;
use crate::state::spi::StateStore;

/// A binary without handlers is almost always one whose handlers the linker dropped: they live in a
/// library crate that `main` never references, so their registrations never reach the binary.
pub(crate) fn check_not_empty(config: &Config, registry: &Registry) -> Result<(), Error> {
    if config.allow_empty || !registry.is_empty() {
        return Ok(());
    }
    Err(Error::bad_request(
        "this binary registers no #[command] and no #[subscription], so it would serve nothing.\n\
         If your handlers live in a library crate, `main` must use something from it, or the \
         linker drops their registrations: have the library export a `pub fn app()` that \
         returns the `cohort::App`, and run it from `main`: `my_lib::app()?.run().await`.\n\
         If this instance really only calls commands, opt in with `App::allow_empty()` or \
         COHORT_ALLOW_EMPTY=true.",
    )
    .with_code("no_handlers"))
}

pub(crate) fn validate_instance_id(id: &str) -> Result<(), Error> {
    validate_name("COHORT_INSTANCE_ID", id)
}

/// The prefix is a NATS subject token and a Redis hash tag's first part, so `.`, `*`, `>`, `{`
/// and `}` would change what subscribes to what and which keys share a slot.
pub(crate) fn validate_subject_prefix(prefix: &str) -> Result<(), Error> {
    validate_name("COHORT_SUBJECT_PREFIX", prefix)
}

fn validate_name(setting: &str, value: &str) -> Result<(), Error> {
    let valid = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "{setting}={value:?} is not valid: use letters, digits, `-` and `_`"
        ))
        .with_code("invalid_config"))
    }
}

/// A name in `COHORT_SERVICES` that no command or subscription has is a typo that would
/// silently serve nothing.
pub(crate) fn validate_services(config: &Config, registry: &Registry) -> Result<(), Error> {
    let known = registry.services();
    let unknown: Vec<&String> = config
        .services
        .iter()
        .flatten()
        .filter(|s| !known.contains(&s.as_str()))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::bad_request(format!(
        "COHORT_SERVICES names {unknown:?}, which this binary does not have; its services are {known:?}"
    ))
    .with_code("invalid_config"))
}

pub(crate) async fn connect_broker(
    config: &Config,
    subjects: &Subjects,
) -> Result<Arc<dyn Broker>, Error> {
    let Some(url) = &config.nats_url else {
        return Ok(Arc::new(MemoryBroker::new()));
    };
    #[cfg(feature = "nats")]
    {
        check_cluster_is_signed(config)?;
        let broker = crate::broker::NatsBroker::connect_with(
            url,
            subjects.clone(),
            &config.instance_id,
            crate::broker::NatsOptions::from_config(config),
        )
        .await?;
        Ok(Arc::new(broker))
    }
    #[cfg(not(feature = "nats"))]
    {
        let _ = (url, subjects);
        Err(missing_feature("COHORT_NATS_URL", "nats"))
    }
}

/// Without a cluster key, any client of the NATS server could call any command as any principal
/// and publish events that subscriptions count: refuse, unless the user says that is acceptable.
#[cfg(feature = "nats")]
fn check_cluster_is_signed(config: &Config) -> Result<(), Error> {
    match (&config.cluster_key, &config.cluster_key_previous) {
        (Some(_), _) => return Ok(()),
        (None, Some(_)) => {
            return Err(Error::bad_request(
                "COHORT_CLUSTER_KEY_PREVIOUS is set but COHORT_CLUSTER_KEY is not: the previous \
                 key is only accepted next to a current one, which signs; set COHORT_CLUSTER_KEY",
            )
            .with_code("invalid_config"));
        }
        (None, None) => {}
    }
    if config.allow_unsigned {
        tracing::warn!(
            "COHORT_ALLOW_UNSIGNED=true: NATS messages are not signed; any client of the NATS \
             server can call commands as any principal and publish events"
        );
        return Ok(());
    }
    Err(Error::bad_request(
        "the instances talk over NATS (COHORT_NATS_URL is set) but no cluster key is set, so any \
         client of the NATS server could call commands as any principal and forge events. Set \
         COHORT_CLUSTER_KEY to the same secret of at least 32 bytes on every instance (generate \
         one with `openssl rand -base64 32`), or set COHORT_ALLOW_UNSIGNED=true to run unsigned.",
    )
    .with_code("unsigned_cluster"))
}

pub(crate) async fn connect_store(config: &Config) -> Result<Arc<dyn StateStore>, Error> {
    let Some(url) = &config.redis_url else {
        return Ok(Arc::new(MemoryStore::new()));
    };
    #[cfg(feature = "redis")]
    {
        let store = crate::state::RedisStore::connect_with(url, &config.redis_tls).await?;
        Ok(Arc::new(store))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url;
        Err(missing_feature("COHORT_REDIS_URL", "redis"))
    }
}

#[cfg(any(not(feature = "nats"), not(feature = "redis")))]
fn missing_feature(setting: &str, feature: &str) -> Error {
    Error::bad_request(format!(
        "{setting} is set, but this binary was built without Cohort's `{feature}` feature; \
         enable it in Cargo.toml (`cohort = {{ version = \"...\", features = [\"{feature}\"] }}`) \
         or unset {setting}"
    ))
    .with_code("invalid_config")
}

/// Many instances with state in each one's memory would each see different data: refuse, unless
/// the user says this is really what they want.
pub(crate) fn check_state_is_shared(
    config: &Config,
    broker: &dyn Broker,
    store: &dyn StateStore,
) -> Result<(), Error> {
    if !broker.is_distributed() || store.is_shared() {
        return Ok(());
    }
    if config.allow_local_state {
        tracing::warn!(
            "COHORT_ALLOW_LOCAL_STATE=true: commands run on any instance but state stays in this \
             process; every instance will see different data and sessions will not follow users"
        );
        return Ok(());
    }
    Err(Error::bad_request(
        "the broker is shared by many instances (COHORT_NATS_URL is set) but the state store is this \
         process's memory (COHORT_REDIS_URL is not set). A command may run on any instance, so state \
         and sessions kept in one instance's memory would be missing on the others. Set \
         COHORT_REDIS_URL=redis://host:6379 so all instances share state, or set \
         COHORT_ALLOW_LOCAL_STATE=true if you really run a single instance.",
    )
    .with_code("local_state_with_distributed_broker"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_one_subject_token_outside_any_hash_tag() {
        assert!(validate_subject_prefix("shop-eu_1").is_ok());
        for bad in ["", "a.b", "a*", ">", "{cohort}", "a b"] {
            let err = validate_subject_prefix(bad).expect_err(bad);
            assert_eq!(err.code(), "invalid_config");
            assert!(err.message().contains("COHORT_SUBJECT_PREFIX"), "{bad}");
        }
    }
}
