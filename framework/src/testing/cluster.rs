//! Many in-process instances of the binary's app against one real NATS and one real Redis.

use std::net::SocketAddr;
use std::time::Duration;

use super::{NatsServer, RedisServer};
use crate::app::App;
use crate::cluster_key::ClusterKey;
use crate::config::Config;
use crate::running::Running;

/// A NATS server, a Redis server and N app instances connected to both, each serving HTTP on its
/// own free port. Instances are named `i0`, `i1`, …; everything stops when it is dropped.
///
/// The instances share a random cluster key of their own ([`Cluster::key`]), so they sign their
/// messages as a deployment must.
///
/// Event timings are short (ack wait 2 s, backoff 50 ms, 200 ms) so that redelivery shows within
/// a test's patience.
pub struct Cluster {
    /// The NATS server every instance uses.
    pub nats: NatsServer,
    /// The Redis server every instance uses.
    pub redis: RedisServer,
    /// The cluster key every instance signs with, new for each cluster.
    pub key: ClusterKey,
    instances: Vec<Option<Running>>,
}

impl Cluster {
    /// Starts the servers and `n` instances.
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, |_, _| {}).await
    }

    /// Starts the servers and `n` instances, `configure` adjusting instance `i`'s configuration.
    pub async fn start_with(n: usize, configure: impl Fn(usize, &mut Config)) -> Cluster {
        let (nats, redis) = tokio::join!(NatsServer::start(), RedisServer::start());
        let mut cluster = Cluster {
            nats,
            redis,
            key: ClusterKey::random(),
            instances: Vec::new(),
        };
        for i in 0..n {
            let mut config = cluster.config(i);
            configure(i, &mut config);
            cluster.add(config).await;
        }
        cluster
    }

    /// The configuration instance `i` starts with: both servers, the cluster key, HTTP on a free
    /// port.
    pub fn config(&self, i: usize) -> Config {
        Config {
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            instance_id: format!("i{i}"),
            nats_url: Some(self.nats.url()),
            redis_url: Some(self.redis.url()),
            cluster_key: Some(self.key.clone()),
            event_ack_wait: Duration::from_secs(2),
            event_backoff: vec![Duration::from_millis(50), Duration::from_millis(200)],
            shutdown_grace: Duration::from_secs(10),
            ..Config::default()
        }
    }

    /// Starts one more instance with `config`; returns its index.
    pub async fn add(&mut self, config: Config) -> usize {
        let id = config.instance_id.clone();
        let running = App::with_config(config)
            .start()
            .await
            .unwrap_or_else(|e| panic!("instance {id} failed to start: {e}"));
        self.instances.push(Some(running));
        self.instances.len() - 1
    }

    /// Instance `i`. Panics if it was stopped.
    pub fn instance(&self, i: usize) -> &Running {
        self.instances[i]
            .as_ref()
            .unwrap_or_else(|| panic!("instance {i} was stopped"))
    }

    /// The base URL of instance `i`'s HTTP server, such as `http://127.0.0.1:41234`.
    pub fn http(&self, i: usize) -> String {
        let addr = self
            .instance(i)
            .http_addr()
            .unwrap_or_else(|| panic!("instance {i} serves no HTTP"));
        format!("http://{addr}")
    }

    /// Shuts instance `i` down gracefully.
    pub async fn stop(&mut self, i: usize) {
        if let Some(running) = self.instances[i].take() {
            running
                .shutdown()
                .await
                .unwrap_or_else(|e| panic!("instance {i} failed to shut down: {e}"));
        }
    }

    /// Abandons instance `i` without a graceful shutdown, as a crash would (its in-process tasks
    /// end with the test's runtime; its broker connection stays until then).
    pub fn abandon(&mut self, i: usize) -> Option<Running> {
        self.instances[i].take()
    }
}
