//! A real Redis Cluster for tests: masters (and a replica of each, when asked) on free ports of
//! 127.0.0.1, each a [`RedisServer`], joined and given the slots with the cluster's own commands.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::servers::RedisServer;
use super::{eventually, eventually_some};

/// The slots of a Redis Cluster.
const SLOTS: u16 = 16384;
/// How long nodes take to agree on the cluster, and replicas to catch up. Generous, because tests
/// run in parallel on small CI machines; it takes well under a second on an idle one.
const FORMS_WITHIN: Duration = Duration::from_secs(30);
/// How long a node may stay silent before the others fail it over to its replica: short for short
/// fault tests, yet long enough that a busy CI machine's slow master is not failed over in error.
const NODE_TIMEOUT: &str = "3000";

/// A real Redis Cluster: `masters` nodes sharing the slots evenly, and with
/// [`start_with_replicas`](Self::start_with_replicas) one replica of each, which takes over when
/// its master dies. Dropped, every node is killed and its directory removed.
///
/// ```no_run
/// # async fn demo() {
/// let redis = cohort::testing::RedisCluster::start(3).await;
/// let store = cohort::state::RedisStore::connect(&redis.url()).await.expect("connect");
/// # drop(store);
/// # }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    /// The masters as started, then their replicas in the same order.
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` nodes, gives each an equal share of the slots and returns once every node
    /// says the cluster is ok.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`], and when the nodes do not form a cluster.
    pub async fn start(masters: usize) -> Self {
        Self::start_nodes(masters, false).await
    }

    /// Like [`start`](Self::start), with a replica of each master that has caught up with it.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub async fn start_with_replicas(masters: usize) -> Self {
        Self::start_nodes(masters, true).await
    }

    async fn start_nodes(masters: usize, replicas: bool) -> Self {
        assert!(masters > 0, "a cluster needs at least one master");
        let count = if replicas { masters * 2 } else { masters };
        let started = futures_util::future::join_all((0..count).map(|_| start_node())).await;
        let (nodes, buses): (Vec<_>, Vec<_>) = started.into_iter().unzip();
        let cluster = RedisCluster { nodes };
        cluster.form(masters, buses[0]).await;
        cluster
    }

    /// Shares the slots among the masters, introduces every node to the first (whose bus listens
    /// on `first_bus`), then makes the other nodes replicas.
    async fn form(&self, masters: usize, first_bus: u16) {
        let first = [self.nodes[0].port(), first_bus].map(|port| port.to_string());
        for (i, node) in self.nodes.iter().enumerate() {
            let mut c = connect(node.port()).await;
            if i < masters {
                let (from, to) = slot_range(i, masters);
                command(&mut c, &["CLUSTER", "ADDSLOTSRANGE", &from, &to]).await;
            }
            if i > 0 {
                command(
                    &mut c,
                    &["CLUSTER", "MEET", "127.0.0.1", &first[0], &first[1]],
                )
                .await;
            }
        }
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        self.until_every_node("every node knows every other", &known)
            .await;
        for (replica, master) in self.nodes[masters..].iter().zip(&self.nodes) {
            let id = query(&mut connect(master.port()).await, &["CLUSTER", "MYID"]).await;
            command(
                &mut connect(replica.port()).await,
                &["CLUSTER", "REPLICATE", &id],
            )
            .await;
        }
        self.until_every_node("the cluster is ok", "cluster_state:ok")
            .await;
        if self.nodes.len() > masters {
            for master in &self.nodes[..masters] {
                until_replicated(master.port()).await;
            }
        }
    }

    /// Waits until the `CLUSTER INFO` of every running node contains `line`.
    async fn until_every_node(&self, what: &str, line: &str) {
        for node in &self.nodes {
            let port = node.port();
            eventually(what, FORMS_WITHIN, async || {
                let info = query(&mut connect(port).await, &["CLUSTER", "INFO"]).await;
                info.lines().any(|l| l.trim() == line)
            })
            .await;
        }
    }

    /// The URL clients connect to: `redis+cluster://127.0.0.1:PORT,...`, naming every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = (self.nodes.iter())
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The index of the node that serves `key` now (the order of start: masters, then their
    /// replicas), as a running node sees it.
    ///
    /// # Panics
    ///
    /// When no running node names a master of the key's slot.
    pub async fn master_of(&self, key: &str) -> usize {
        eventually_some(
            &format!("a node names the master of `{key}`"),
            FORMS_WITHIN,
            async || {
                let any = self.nodes.iter().find(|n| n.is_running())?;
                let mut c = connect(any.port()).await;
                let slot: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(key)
                    .query_async(&mut c)
                    .await
                    .ok()?;
                let nodes = query(&mut c, &["CLUSTER", "NODES"]).await;
                let port = master_port(&nodes, slot)?;
                self.nodes.iter().position(|n| n.port() == port)
            },
        )
        .await
    }

    /// Waits until a replica of master `index` has every write the master had when this was
    /// called: a crash of the master then loses at most the writes after it, as a crash of a
    /// healthy cluster would, not a replica's whole data set in the middle of a resync.
    ///
    /// # Panics
    ///
    /// When no replica catches up within 30 s.
    pub async fn until_replicated(&self, index: usize) {
        until_replicated(self.nodes[index].port()).await;
    }

    /// Kills node `index` as a crash would (SIGKILL).
    pub async fn kill(&mut self, index: usize) {
        self.nodes[index].stop().await;
    }

    /// Waits until every running node says the cluster is ok again: after a master died, once
    /// its replica took over.
    ///
    /// # Panics
    ///
    /// When that does not happen within 30 s.
    pub async fn until_ok(&self) {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let port = node.port();
            eventually("the cluster is ok", FORMS_WITHIN, async || {
                let info = query(&mut connect(port).await, &["CLUSTER", "INFO"]).await;
                info.lines().any(|l| l.trim() == "cluster_state:ok")
            })
            .await;
        }
    }
}

/// One node, in cluster mode with its bus on a free port of its own, and that port.
async fn start_node() -> (RedisServer, u16) {
    let node = RedisServer::start_cluster_node(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        NODE_TIMEOUT,
    ])
    .await;
    let bus = node.cluster_bus().expect("a cluster node has a bus");
    (node, bus)
}

/// The first and last slot of master `i` of `masters`, as arguments.
fn slot_range(i: usize, masters: usize) -> (String, String) {
    let share = |i: usize| i * usize::from(SLOTS) / masters;
    (share(i).to_string(), (share(i + 1) - 1).to_string())
}

/// The port of the master that holds `slot`, from the text of `CLUSTER NODES`: a line per node,
/// `id ip:port@bus flags master ping pong epoch link slots...`, failed nodes flagged `fail`.
fn master_port(nodes: &str, slot: u16) -> Option<u16> {
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let flags = fields.get(2)?;
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            return None;
        }
        let holds = fields.get(8..)?.iter().any(|range| {
            let (from, to) = range.split_once('-').unwrap_or((range, range));
            matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(from), Ok(to)) if (from..=to).contains(&slot))
        });
        let address = fields.get(1)?.split('@').next()?;
        holds.then(|| address.rsplit(':').next()?.parse().ok())?
    })
}

/// The number after `field` in `text` (an `INFO` reply or one of its lines).
fn info_number(text: &str, field: &str) -> Option<u64> {
    let (_, after) = text.split_once(field)?;
    let digits = after.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// Waits until the master on `port` has a replica online with every write the master had when
/// this was called.
pub(super) async fn until_replicated(port: u16) {
    let info = query(&mut connect(port).await, &["INFO", "replication"]).await;
    let written = info_number(&info, "master_repl_offset:").unwrap_or(0);
    eventually(
        "a replica caught up with its master",
        FORMS_WITHIN,
        async || {
            let info = query(&mut connect(port).await, &["INFO", "replication"]).await;
            info.lines().any(|line| {
                line.starts_with("slave")
                    && line.contains("state=online")
                    && info_number(line, "offset=").is_some_and(|offset| offset >= written)
            })
        },
    )
    .await;
}

pub(super) async fn connect(port: u16) -> MultiplexedConnection {
    let url = format!("redis://127.0.0.1:{port}");
    let client = redis::Client::open(url.as_str())
        .unwrap_or_else(|e| panic!("invalid cluster node URL {url}: {e}"));
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("cannot reach the cluster node at {url}: {e}"))
}

/// Runs `args` on a node, panicking with the node's reply when it fails.
async fn command(c: &mut MultiplexedConnection, args: &[&str]) {
    let _: String = query(c, args).await;
}

pub(super) async fn query(c: &mut MultiplexedConnection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(c)
        .await
        .unwrap_or_else(|e| panic!("`{}` on a cluster node failed: {e}", args.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_share_every_slot() {
        assert_eq!(slot_range(0, 3), ("0".to_owned(), "5460".to_owned()));
        assert_eq!(slot_range(2, 3), ("10922".to_owned(), "16383".to_owned()));
    }

    #[test]
    fn the_master_of_a_slot_is_read_from_cluster_nodes() {
        let nodes = "a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                     b 127.0.0.1:7001@17001 master,fail - 0 0 2 connected 5461-10922\n\
                     c 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383 42\n";
        assert_eq!(master_port(nodes, 0), Some(7000));
        assert_eq!(master_port(nodes, 6000), None);
        assert_eq!(master_port(nodes, 16383), Some(7002));
    }
}
