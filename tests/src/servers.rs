//! One real NATS and one real Redis for example-app processes, and the environment that points
//! the processes at them.

use cohort::ClusterKey;
use cohort::testing::{NatsServer, RedisServer};

/// The servers a deployment of example-app processes shares, and its cluster key.
pub struct Servers {
    pub nats: NatsServer,
    pub redis: RedisServer,
    /// The key the deployment's instances sign their messages with, new for each deployment.
    pub key: ClusterKey,
}

impl Servers {
    /// Starts both servers; Redis forgets everything when it stops.
    pub async fn start() -> Servers {
        let (nats, redis) = tokio::join!(NatsServer::start(), RedisServer::start());
        Servers::of(nats, redis)
    }

    /// Starts both servers; Redis keeps what it acknowledged across a stop and a restart, as
    /// the state of a deployment must to add up after an outage.
    pub async fn start_with_durable_redis() -> Servers {
        let (nats, redis) = tokio::join!(NatsServer::start(), RedisServer::start_durable());
        Servers::of(nats, redis)
    }

    fn of(nats: NatsServer, redis: RedisServer) -> Servers {
        let key = ClusterKey::random();
        Servers { nats, redis, key }
    }

    /// The environment of an example-app process of this deployment: see [`deployment_env`].
    pub fn env(&self) -> Vec<(&'static str, String)> {
        deployment_env(&self.nats, &self.redis.url(), &self.key)
    }
}

/// The environment of an example-app process on `nats`, the Redis at `redis_url` and `key`. Event
/// timings are short so that a test sees redeliveries: an event held by an instance that died
/// comes back after 2 s, and one whose handler fails is retried for about half a minute before it
/// is dead-lettered, which outlasts any outage a test causes.
pub fn deployment_env(
    nats: &NatsServer,
    redis_url: &str,
    key: &ClusterKey,
) -> Vec<(&'static str, String)> {
    vec![
        ("COHORT_NATS_URL", nats.url()),
        ("COHORT_REDIS_URL", redis_url.to_owned()),
        ("COHORT_CLUSTER_KEY", key.expose().to_owned()),
        ("COHORT_EVENT_ACK_WAIT", "2s".to_owned()),
        ("COHORT_EVENT_BACKOFF", "50ms,200ms,1s".to_owned()),
        ("COHORT_EVENT_MAX_ATTEMPTS", "30".to_owned()),
        ("COHORT_LOG", "warn,cohort::app=info".to_owned()),
    ]
}
