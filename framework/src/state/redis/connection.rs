//! Where the store's commands go: one Redis server, a Redis Cluster, or the master that Redis
//! Sentinel names, chosen by the URL's scheme. All sit behind one [`Connection`], so every command
//! and script of the store runs on each.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::SentinelClient;
use redis::{Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};
use tokio::sync::Mutex;

/// The schemes of a Redis Cluster: `redis+cluster://[user:password@]host:port[,host:port...]`,
/// and the same with TLS.
const CLUSTER: [&str; 2] = ["redis+cluster://", "rediss+cluster://"];
/// The schemes of Redis Sentinel:
/// `redis+sentinel://[user:password@]host:port[,host:port...]/master-name[/db]`, and with TLS.
const SENTINEL: [&str; 2] = ["redis+sentinel://", "rediss+sentinel://"];

/// What the store connects to.
pub(super) enum Target {
    /// One server.
    Server(Client),
    /// A cluster, found from its seed nodes.
    Cluster(ClusterClient),
    /// The master that the sentinels name, asked again after it fails.
    Sentinel(Mutex<SentinelClient>),
}

/// A connection to a [`Target`]. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub(super) enum Connection {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A URL that names several nodes: `scheme://[credentials@]host:port,host:port[/path]`.
struct Nodes<'a> {
    /// `redis` or `rediss`.
    scheme: &'static str,
    /// With their `@`, or empty.
    credentials: &'a str,
    hosts: Vec<&'a str>,
    /// With its leading `/`, or empty.
    path: &'a str,
}

/// The parts of `url` when it has one of `schemes` (plain, then TLS).
fn nodes<'a>(url: &'a str, schemes: [&str; 2]) -> Option<Nodes<'a>> {
    let (scheme, rest) = match schemes.map(|s| url.strip_prefix(s)) {
        [Some(rest), _] => ("redis", rest),
        [_, Some(rest)] => ("rediss", rest),
        _ => return None,
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (credentials, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    Some(Nodes {
        scheme,
        credentials,
        hosts: hosts.split(',').collect(),
        path,
    })
}

/// The URLs of the seed nodes of a cluster URL, each with the URL's credentials and path;
/// `None` for another URL.
pub(super) fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let n = nodes(url, CLUSTER)?;
    let url = |host| format!("{}://{}{host}{}", n.scheme, n.credentials, n.path);
    Some(n.hosts.iter().map(url).collect())
}

/// What a Sentinel URL names.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SentinelUrl {
    /// The URLs of the sentinels.
    pub(super) sentinels: Vec<String>,
    /// The name the sentinels know the master by.
    pub(super) master_name: String,
    /// A URL with the master's credentials, TLS and database (its host is a sentinel's, unused).
    pub(super) master: String,
}

/// The parts of a Sentinel URL; `None` for another URL.
pub(super) fn sentinel_url(url: &str) -> Option<SentinelUrl> {
    let n = nodes(url, SENTINEL)?;
    let (master_name, db) = match n.path.trim_start_matches('/').split_once('/') {
        Some((name, db)) => (name, db),
        None => (n.path.trim_start_matches('/'), ""),
    };
    Some(SentinelUrl {
        sentinels: (n.hosts.iter())
            .map(|host| format!("{}://{host}", n.scheme))
            .collect(),
        master_name: master_name.to_owned(),
        master: format!("{}://{}{}/{db}", n.scheme, n.credentials, n.hosts[0]),
    })
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
            Target::Sentinel(sentinel) => {
                let master = sentinel.lock().await.async_get_client().await?;
                ConnectionManager::new_with_config(master, timeouts.server())
                    .await
                    .map(Connection::Server)
            }
        }
    }

    /// Whether a failed connection may mean that another server took over: then the master is
    /// asked for again.
    pub(super) fn follows_a_master(&self) -> bool {
        matches!(self, Target::Sentinel(_))
    }

    /// A connection to the master the sentinels name now, connecting on its first request.
    pub(super) async fn current_master(&self, timeouts: &Timeouts) -> Option<Connection> {
        let Target::Sentinel(sentinel) = self else {
            return None;
        };
        let master = sentinel.lock().await.async_get_client().await.ok()?;
        ConnectionManager::new_lazy_with_config(master, timeouts.server())
            .ok()
            .map(Connection::Server)
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
            Target::Cluster(_) | Target::Sentinel(_) => None,
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

    #[test]
    fn a_sentinel_url_names_the_sentinels_and_the_master() {
        assert_eq!(sentinel_url("redis+cluster://h:1"), None);
        assert_eq!(
            sentinel_url("redis+sentinel://u:p@s1:26379,s2:26379/main/2"),
            Some(SentinelUrl {
                sentinels: vec!["redis://s1:26379".to_owned(), "redis://s2:26379".to_owned()],
                master_name: "main".to_owned(),
                master: "redis://u:p@s1:26379/2".to_owned(),
            })
        );
    }
}
