//! A cluster of real `nats-server` nodes with JetStream, for tests that kill a node under load.
//!
//! Each node has its own directory (configuration, JetStream store, log), a client, a route and a
//! monitoring port on 127.0.0.1, all fixed at start so that a node restarts where it was and its
//! peers find it again. Readiness is asked on the monitoring port: `/healthz` answers 200 once
//! the node is current with the JetStream meta leader and with every stream it holds a copy of.

use std::ffi::OsString;
use std::fs;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::process::{NotReady, Process};
use super::servers::{NATS, PORT_ATTEMPTS, free_port, loopback_url};

/// How long a monitoring request may take before the node counts as not answering.
const MONITOR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Real `nats-server` nodes routed into one cluster, with JetStream, on free ports of 127.0.0.1.
///
/// ```no_run
/// # async fn demo() {
/// let mut cluster = cohort::testing::NatsCluster::start(3).await;
/// let client = async_nats::connect(cluster.url(0)).await.expect("connect");
/// cluster.kill(0).await; // a crash: the client reconnects to another node
/// cluster.restart(0).await; // back, and current with its peers
/// # drop(client);
/// # }
/// ```
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
}

/// One node: its process and what it was started with, the same on every restart.
#[derive(Debug)]
struct Node {
    process: Process,
    name: String,
    port: u16,
    monitor_port: u16,
    args: Vec<OsString>,
}

impl NatsCluster {
    /// Starts `size` nodes named `n0`, `n1`, … routed to each other, and returns once every node
    /// is healthy and JetStream has a meta leader.
    ///
    /// # Panics
    ///
    /// When the binary is missing or a node does not become ready; the message includes its
    /// output.
    pub async fn start(size: usize) -> NatsCluster {
        let mut attempt = 1;
        loop {
            let mut cluster = NatsCluster::spawn(size).await;
            let Err((node, why)) = cluster.wait_until_all_current().await else {
                return cluster;
            };
            let process = &cluster.nodes[node].process;
            // Another process took a port between the probe and the node's bind: a node's peers
            // know its ports, so the whole cluster starts again on new ones.
            let taken = process.log_since(0).contains("Address already in use");
            if !(taken && attempt < PORT_ATTEMPTS) {
                process.fail("becoming current with its cluster", why);
            }
            attempt += 1;
        }
    }

    /// Starts `size` nodes on free ports, routed to each other.
    async fn spawn(size: usize) -> NatsCluster {
        let ports = distinct_free_ports(3 * size);
        let ports: Vec<(u16, u16, u16)> = ports
            .chunks_exact(3)
            .map(|node| (node[0], node[1], node[2]))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route, _)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let mut nodes: Vec<Node> = ports
            .iter()
            .enumerate()
            .map(|(i, &(port, route, monitor_port))| {
                Node::new(format!("n{i}"), port, route, monitor_port, &routes)
            })
            .collect();
        for node in &mut nodes {
            node.process.spawn(&node.args).await;
        }
        NatsCluster { nodes }
    }

    /// Waits until every node is current; the first that is not, and why.
    async fn wait_until_all_current(&mut self) -> Result<(), (usize, NotReady)> {
        for node in 0..self.nodes.len() {
            self.current(node).await.map_err(|why| (node, why))?;
        }
        Ok(())
    }

    /// The URLs of every node, comma-separated, as `COHORT_NATS_URL` takes them.
    pub fn urls(&self) -> String {
        let urls: Vec<String> = (0..self.nodes.len()).map(|i| self.url(i)).collect();
        urls.join(",")
    }

    /// How many nodes it has.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// The URL of node `node`: `nats://127.0.0.1:PORT`, the same across restarts.
    pub fn url(&self, node: usize) -> String {
        loopback_url("nats", self.nodes[node].port)
    }

    /// The server name of node `node` (`n0`, `n1`, …), as JetStream names its leaders.
    pub fn name(&self, node: usize) -> &str {
        &self.nodes[node].name
    }

    /// Kills node `node` with SIGKILL, as a crash would, and waits until it is gone. Its store is
    /// kept for [`restart`](Self::restart).
    pub async fn kill(&mut self, node: usize) {
        self.nodes[node].process.stop().await;
    }

    /// Starts node `node` again with the same ports and store, and returns once it is current
    /// again: it rejoined the cluster and caught up with every stream it holds a copy of.
    ///
    /// # Panics
    ///
    /// When the node does not become current in time.
    pub async fn restart(&mut self, node: usize) {
        let Node { process, args, .. } = &mut self.nodes[node];
        process.spawn(args).await;
        self.wait_until_current(node).await;
    }

    /// The node that leads JetStream's meta group (where streams are created), if one does now,
    /// as the first running node that answers sees it.
    pub async fn meta_leader(&self) -> Option<usize> {
        for node in &self.nodes {
            let Some(jsz) = monitor(node.monitor_port, "/jsz").await else {
                continue;
            };
            let leader = jsz.pointer("/meta_cluster/leader").and_then(Value::as_str);
            return leader.and_then(|name| self.index_of(name));
        }
        None
    }

    /// The node that leads the stream `stream` (where its messages are stored first), if one does
    /// now, as JetStream's API tells the first running node's client.
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        for node in 0..self.nodes.len() {
            if let Some(info) = self.stream_info(node, stream).await {
                let leader = info.pointer("/cluster/leader").and_then(Value::as_str);
                return leader.and_then(|name| self.index_of(name));
            }
        }
        None
    }

    /// What node `node` answers to `$JS.API.STREAM.INFO.{stream}`, if it answers in time.
    async fn stream_info(&self, node: usize, stream: &str) -> Option<Value> {
        let client = async_nats::connect(self.url(node)).await.ok()?;
        let subject = format!("$JS.API.STREAM.INFO.{stream}");
        let asked = timeout(MONITOR_TIMEOUT, client.request(subject, Bytes::new()));
        let reply = asked.await.ok()?.ok()?;
        serde_json::from_slice(&reply.payload).ok()
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.name == name)
    }

    /// Waits until node `node` is current with its cluster.
    ///
    /// # Panics
    ///
    /// When it does not become current in time.
    async fn wait_until_current(&mut self, node: usize) {
        if let Err(why) = self.current(node).await {
            self.nodes[node]
                .process
                .fail("becoming current with its cluster", why);
        }
    }

    /// Waits until node `node` says it is healthy (current with its peers) and sees a meta
    /// leader.
    async fn current(&mut self, node: usize) -> Result<(), NotReady> {
        let Node {
            process,
            monitor_port,
            ..
        } = &mut self.nodes[node];
        let port = *monitor_port;
        let current = || async move {
            let healthy = monitor(port, "/healthz").await?;
            (healthy.get("status")?.as_str()? == "ok").then_some(())?;
            let jsz = monitor(port, "/jsz").await?;
            let leader = jsz.pointer("/meta_cluster/leader")?.as_str()?;
            (!leader.is_empty()).then_some(())
        };
        process.wait_for(current).await
    }
}

impl Node {
    /// A node of the cluster whose route ports are `routes`, its configuration written to its
    /// directory.
    fn new(name: String, port: u16, route: u16, monitor_port: u16, routes: &[String]) -> Node {
        let process = Process::new(&NATS);
        let store = process.data_dir();
        let config = format!(
            "server_name: {name}\n\
             listen: 127.0.0.1:{port}\n\
             http: 127.0.0.1:{monitor_port}\n\
             jetstream {{ store_dir: {store:?} }}\n\
             cluster {{\n  name: cohort-test\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
            routes.join(", "),
        );
        let file = process.dir.path().join("server.conf");
        if let Err(e) = fs::write(&file, config) {
            panic!("cannot write {}: {e}", file.display());
        }
        Node {
            process,
            name,
            port,
            monitor_port,
            args: vec!["-c".into(), file.into()],
        }
    }
}

/// `n` ports on 127.0.0.1 that were free a moment ago, no two the same: the OS may hand out a
/// port again once it was let go of.
fn distinct_free_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let port = free_port();
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

/// The JSON that the monitoring endpoint on `port` answers to `GET path`, if it answers within
/// [`MONITOR_TIMEOUT`].
async fn monitor(port: u16, path: &str) -> Option<Value> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let start = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        serde_json::from_slice(&response[start..]).ok()
    };
    timeout(MONITOR_TIMEOUT, exchange).await.ok()?
}
