//! Where the store's commands go: one Redis server, or a Redis Cluster, chosen by the URL's scheme.
//! Both sit behind one [`Connection`], so every command and script of the store runs on either.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// The scheme of a Redis Cluster: `redis+cluster://[user:password@]host:port[,host:port...]`.
const CLUSTER: &str = "redis+cluster://";
/// The same, with TLS.
const CLUSTER_TLS: &str = "rediss+cluster://";

/// What the store connects to.
#[expect(
    clippy::large_enum_variant,
    reason = "one per store, made once and kept in its shared state"
)]
pub(super) enum Target {
    /// One server.
    Server(Client),
    /// A cluster, found from its seed nodes.
    Cluster(ClusterClient),
}

/// A connection to a [`Target`]. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub(super) enum Connection {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The URLs of the seed nodes of a cluster URL, each with the URL's credentials and path;
/// `None` for the URL of one server.
pub(super) fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = match (url.strip_prefix(CLUSTER), url.strip_prefix(CLUSTER_TLS)) {
        (Some(rest), _) => ("redis", rest),
        (_, Some(rest)) => ("rediss", rest),
        _ => return None,
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (credentials, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    Some(
        hosts
            .split(',')
            .map(|host| format!("{scheme}://{credentials}{host}{path}"))
            .collect(),
    )
}

/// The timeouts and retries of a connection, of either kind.
pub(super) struct Timeouts {
    pub(super) connection: std::time::Duration,
    pub(super) response: std::time::Duration,
    /// Retries of a request after an error or a redirection.
    pub(super) retries: u32,
    pub(super) min_delay: std::time::Duration,
}

impl Timeouts {
    pub(super) fn server(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connection))
            .set_response_timeout(Some(self.response))
            .set_number_of_retries(self.retries as usize)
            .set_min_delay(self.min_delay)
    }

    pub(super) fn cluster(&self, builder: ClusterClientBuilder) -> ClusterClientBuilder {
        let min_delay = u64::try_from(self.min_delay.as_millis()).unwrap_or(u64::MAX);
        builder
            .connection_timeout(self.connection)
            .response_timeout(self.response)
            .retries(self.retries)
            .min_retry_wait(min_delay)
            .max_retry_wait(min_delay.saturating_mul(4))
    }
}

impl Target {
    /// Connects, failing when no server answers.
    pub(super) async fn connect(&self, timeouts: &Timeouts) -> RedisResult<Connection> {
        match self {
            Target::Server(client) => {
                ConnectionManager::new_with_config(client.clone(), timeouts.server())
                    .await
                    .map(Connection::Server)
            }
            Target::Cluster(client) => client.get_async_connection().await.map(Connection::Cluster),
        }
    }

    /// A connection that connects on its first request, to replace one that stopped answering;
    /// `None` for a cluster, whose connection replaces the connections to its nodes by itself.
    pub(super) fn reconnect(&self, timeouts: &Timeouts) -> Option<Connection> {
        match self {
            Target::Server(client) => {
                ConnectionManager::new_lazy_with_config(client.clone(), timeouts.server())
                    .ok()
                    .map(Connection::Server)
            }
            Target::Cluster(_) => None,
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Server(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Server(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_its_seed_nodes() {
        assert_eq!(cluster_nodes("redis://h:1"), None);
        assert_eq!(
            cluster_nodes("redis+cluster://u:p@h1:7000,h2:7001"),
            Some(vec![
                "redis://u:p@h1:7000".to_owned(),
                "redis://u:p@h2:7001".to_owned()
            ])
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://h1:7000/0"),
            Some(vec!["rediss://h1:7000/0".to_owned()])
        );
    }
}
