//! A real Redis Sentinel deployment for tests: a master, a replica of it, and three sentinels that
//! watch the master and promote the replica when it dies.

use std::ffi::OsString;
use std::time::Duration;

use super::eventually;
use super::process::Process;
use super::redis_cluster::{self, connect};
use super::servers::{REDIS, RedisServer, greets, on_free_port};

/// The name the sentinels know the master by.
const MASTER_NAME: &str = "cohort";
/// How long the deployment may take to be watched in full. Generous, because tests run in parallel
/// on small CI machines; sentinels find each other within a few seconds.
const FORMS_WITHIN: Duration = Duration::from_secs(30);

/// A master, its replica and three sentinels, each on a free port of 127.0.0.1. The sentinels
/// fail the master over to the replica 1 s after it stops answering. Dropped, every process is
/// killed and its directory removed.
///
/// ```no_run
/// # async fn demo() {
/// let redis = cohort::testing::RedisSentinel::start().await;
/// let store = cohort::state::RedisStore::connect(&redis.url()).await.expect("connect");
/// # drop(store);
/// # }
/// ```
#[derive(Debug)]
pub struct RedisSentinel {
    master: RedisServer,
    replica: RedisServer,
    /// Each with its port.
    sentinels: Vec<(Process, u16)>,
}

impl RedisSentinel {
    /// Starts the master, its replica and the sentinels, and returns once every sentinel knows
    /// the replica and the other sentinels, so that a failover can happen.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`], and when the sentinels do not get ready.
    pub async fn start() -> Self {
        let master = RedisServer::start().await;
        let port = master.port().to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]).await;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(start_sentinel(master.port()).await);
        }
        let deployment = RedisSentinel {
            master,
            replica,
            sentinels,
        };
        for (_, port) in &deployment.sentinels {
            let port = *port;
            eventually(
                "every sentinel sees the replica and the others",
                FORMS_WITHIN,
                async || {
                    let args = ["SENTINEL", "MASTER", MASTER_NAME];
                    let fields: Vec<String> = redis::cmd(args[0])
                        .arg(args[1])
                        .arg(args[2])
                        .query_async(&mut connect(port).await)
                        .await
                        .unwrap_or_default();
                    let field = |name: &str| {
                        let at = fields.iter().position(|f| f == name)?;
                        fields.get(at + 1).cloned()
                    };
                    field("num-slaves").as_deref() == Some("1")
                        && field("num-other-sentinels").as_deref() == Some("2")
                },
            )
            .await;
        }
        deployment
    }

    /// The URL clients connect to: `redis+sentinel://127.0.0.1:PORT,.../cohort`.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = (self.sentinels.iter())
            .map(|(_, port)| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", sentinels.join(","))
    }

    /// Waits until the replica has every write the master took so far.
    ///
    /// # Panics
    ///
    /// When that does not happen within 30 s.
    pub async fn until_replicated(&self) {
        redis_cluster::until_replicated(self.master.port()).await;
    }

    /// Kills the master as a crash would (SIGKILL).
    pub async fn kill_master(&mut self) {
        self.master.stop().await;
    }

    /// Waits until the sentinels name the replica as the master.
    ///
    /// # Panics
    ///
    /// When that does not happen within 30 s.
    pub async fn until_failed_over(&self) {
        let (sentinel, replica) = (self.sentinels[0].1, self.replica.port().to_string());
        eventually(
            "the sentinels promote the replica",
            FORMS_WITHIN,
            async || {
                let address: Vec<String> = redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(MASTER_NAME)
                    .query_async(&mut connect(sentinel).await)
                    .await
                    .unwrap_or_default();
                address.get(1) == Some(&replica)
            },
        )
        .await;
    }
}

/// A sentinel on a free port watching the master on `master_port`, and that port. Its
/// configuration is a file of its own, which it rewrites as it learns.
async fn start_sentinel(master_port: u16) -> (Process, u16) {
    let mut process = Process::new(&REDIS);
    let config = process.dir.path().join("sentinel.conf");
    let started = async |process: &mut Process, port: u16| {
        let text = format!(
            "port {port}\nbind 127.0.0.1\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n"
        );
        if let Err(e) = std::fs::write(&config, text) {
            panic!("cannot write {}: {e}", config.display());
        }
        let args = [
            config.clone().into_os_string(),
            OsString::from("--sentinel"),
        ];
        process.spawn(&args).await;
        process
            .wait_for(|| greets(port, b"PING\r\n", b"+PONG"))
            .await
    };
    let port = on_free_port(&mut process, "answering PING as a sentinel", started).await;
    (process, port)
}
