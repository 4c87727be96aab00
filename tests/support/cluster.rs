//! Several Switchboard nodes sharing one Redis broker (`--broker`), each a real process on
//! loopback, with short presence and broker-check periods so failures show quickly; their
//! `/status`, and polling with a deadline.

use std::{future::Future, time::Duration};

use serde_json::Value;
use tokio::time::{timeout, Instant};

use super::{redis::Redis, Server};

/// `--presence-ttl` of the nodes unless a test gives its own.
pub const PRESENCE_TTL: Duration = Duration::from_secs(3);
/// `--broker-check-interval` of the nodes unless a test gives its own.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a node may take to become ready.
pub const READY: Duration = Duration::from_secs(15);
/// The contract: nodes reconnect and resubscribe within this time of the broker coming back.
pub const RECONNECT: Duration = Duration::from_secs(5);

/// The tests of one binary that start clusters run one at a time: they measure how long
/// failures take to show, which a machine shared with other clusters would blur.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Runs a test body within `limit`.
pub async fn bounded<T>(limit: Duration, body: impl Future<Output = T>) -> T {
    timeout(limit, body)
        .await
        .unwrap_or_else(|_| panic!("the test finishes within {limit:?}"))
}

/// The flags of a node of the broker at `broker_url`: two workers, `--node-id`, the short
/// presence and check periods (unless `extra` sets them), then `extra`.
pub fn node_args(broker_url: &str, node_id: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--workers",
        "2",
        "--broker",
        broker_url,
        "--node-id",
        node_id,
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    if !extra.contains(&"--presence-ttl") {
        args.extend([
            "--presence-ttl".into(),
            format!("{}s", PRESENCE_TTL.as_secs()),
        ]);
    }
    if !extra.contains(&"--broker-check-interval") {
        args.extend([
            "--broker-check-interval".into(),
            format!("{}s", CHECK_INTERVAL.as_secs()),
        ]);
    }
    args.extend(extra.iter().map(|arg| arg.to_string()));
    args
}

/// Starts a node (without waiting for readiness).
pub fn start_node(broker_url: &str, node_id: &str, extra: &[&str]) -> Server {
    let args = node_args(broker_url, node_id, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&args)
}

/// A GET with a 5 s timeout: the status and body, or the error.
pub async fn try_get(url: &str) -> Result<(u16, String), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// A GET that must get an answer.
pub async fn get(url: &str) -> (u16, String) {
    try_get(url)
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
}

/// The node's `/status` document.
pub async fn status(server: &Server) -> Value {
    let (code, body) = get(&server.http_url("/status")).await;
    assert_eq!(code, 200, "/status: {body}");
    serde_json::from_str(&body).unwrap_or_else(|_| panic!("/status is JSON: {body}"))
}

/// The node's `/status` `broker` object.
pub async fn broker_status(server: &Server) -> Value {
    let status = status(server).await;
    let broker = status["broker"].clone();
    assert!(broker.is_object(), "/status has a broker object: {status}");
    broker
}

/// The value of an unlabelled sample (e.g. `switchboard_broker_connected`, or a counter's
/// `..._total`) in the node's `/metrics`; `None` if it is not there.
pub async fn metric(server: &Server, sample: &str) -> Option<f64> {
    let (code, text) = get(&server.http_url("/metrics")).await;
    assert_eq!(code, 200, "/metrics");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.split_once(' ')?;
            (name == sample).then(|| value.split_whitespace().next()?.parse().ok())?
        })
}

/// A counter of the `broker` object (it must be a number).
pub fn counter(broker: &Value, field: &str) -> u64 {
    broker[field]
        .as_u64()
        .unwrap_or_else(|| panic!("broker.{field} is a number: {broker}"))
}

/// Calls `check` every 50 ms until it gives a value, and panics naming `what` if that takes
/// longer than `limit`.
pub async fn poll<T>(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to [`READY`] for the node's `/readyz` to answer 200.
pub async fn wait_ready(server: &Server) {
    let url = server.http_url("/readyz");
    poll(READY, &format!("{url} answers 200"), async || {
        matches!(try_get(&url).await, Ok((200, _))).then_some(())
    })
    .await;
}

/// One Redis and the nodes using it.
pub struct Cluster {
    pub redis: Redis,
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// Starts `count` nodes (`node1`, `node2`, …) of `redis` with `extra` flags and waits until
    /// each is ready.
    pub async fn start(redis: Redis, count: usize, extra: &[&str]) -> Cluster {
        let url = redis.url();
        let mut cluster = Cluster {
            redis,
            nodes: Vec::new(),
        };
        for n in 1..=count {
            cluster
                .nodes
                .push(start_node(&url, &format!("node{n}"), extra));
        }
        for node in &cluster.nodes {
            wait_ready(node).await;
        }
        cluster
    }

    /// Waits until each of these nodes reports at least `at_least` broker channels (a room's
    /// subscription is made asynchronously when its first local member joins).
    pub async fn wait_channels(&self, nodes: &[usize], at_least: u64) {
        for &index in nodes {
            let node = &self.nodes[index];
            poll(
                Duration::from_secs(10),
                &format!(
                    "node{} subscribes (broker.channels >= {at_least})",
                    index + 1
                ),
                async || {
                    (counter(&broker_status(node).await, "channels") >= at_least).then_some(())
                },
            )
            .await;
        }
    }

    /// The `broker` objects of all running nodes, by index.
    pub async fn broker_statuses(&mut self) -> Vec<Option<Value>> {
        let mut statuses = Vec::new();
        for node in self.nodes.iter_mut() {
            if node.is_running() {
                statuses.push(Some(broker_status(node).await));
            } else {
                statuses.push(None);
            }
        }
        statuses
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // A failing test shows what the processes said.
        for (index, node) in self.nodes.iter().enumerate() {
            let log = node.log();
            eprintln!(
                "--- node{} (pid {}) log, last {} of {} lines:",
                index + 1,
                node.pid(),
                log.len().min(60),
                log.len()
            );
            for line in &log[log.len().saturating_sub(60)..] {
                eprintln!("{line}");
            }
        }
        let log = self.redis.log();
        eprintln!("--- redis-server log, last {} lines:", log.len().min(30));
        for line in &log[log.len().saturating_sub(30)..] {
            eprintln!("{line}");
        }
    }
}
