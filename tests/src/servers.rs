//! One real NATS (a server or a cluster of them) and one real Redis for example-app processes,
//! and the environment that points the processes at them.

use cohort::ClusterKey;
use cohort::testing::{NatsCluster, NatsServer, RedisServer};

/// The servers a deployment of example-app processes shares, and its cluster key. NATS is one
/// server unless the deployment was [started clustered](Servers::start_clustered).
pub struct Servers<Nats = NatsServer> {
    pub nats: Nats,
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
}

impl Servers<NatsCluster> {
    /// Starts a NATS cluster of `nodes` and one Redis; the instances keep their events on every
    /// node (`COHORT_STREAM_REPLICAS`).
    pub async fn start_clustered(nodes: usize) -> Servers<NatsCluster> {
        let (nats, redis) = tokio::join!(NatsCluster::start(nodes), RedisServer::start());
        Servers::of(nats, redis)
    }
}

/// Where the instances of a deployment find NATS.
pub trait NatsUrls {
    /// `COHORT_NATS_URL`: one URL, or a comma-separated list for a cluster.
    fn urls(&self) -> String;
    /// `COHORT_STREAM_REPLICAS`: a copy of each stream on every node.
    fn replicas(&self) -> usize;
}

impl NatsUrls for NatsServer {
    fn urls(&self) -> String {
        self.url()
    }
    fn replicas(&self) -> usize {
        1
    }
}

impl NatsUrls for NatsCluster {
    fn urls(&self) -> String {
        NatsCluster::urls(self)
    }
    fn replicas(&self) -> usize {
        self.size()
    }
}

impl<Nats: NatsUrls> Servers<Nats> {
    fn of(nats: Nats, redis: RedisServer) -> Servers<Nats> {
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
    nats: &impl NatsUrls,
    redis_url: &str,
    key: &ClusterKey,
) -> Vec<(&'static str, String)> {
    vec![
        ("COHORT_NATS_URL", nats.urls()),
        ("COHORT_STREAM_REPLICAS", nats.replicas().to_string()),
        ("COHORT_REDIS_URL", redis_url.to_owned()),
        ("COHORT_CLUSTER_KEY", key.expose().to_owned()),
        ("COHORT_EVENT_ACK_WAIT", "2s".to_owned()),
        ("COHORT_EVENT_BACKOFF", "50ms,200ms,1s".to_owned()),
        ("COHORT_EVENT_MAX_ATTEMPTS", "30".to_owned()),
        ("COHORT_LOG", "warn,cohort::app=info".to_owned()),
    ]
}
