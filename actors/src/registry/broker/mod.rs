//! The seam between this node and the other nodes of a cluster.
//!
//! A group of a cluster-scoped protocol (see [`crate::protocol::Scope`]) has members on every
//! node. The shard that broadcasts to it delivers to this node's members itself and hands the
//! message to the broker once; the broker carries it to the other nodes that have members of
//! the group (interest-based routing), and each of those fans it out to its own shards.
//!
//! Two implementations: [`Local`] (no `--broker`: this node is the whole server, nothing leaves
//! it) and [`redis::RedisBroker`]. Another broker (NATS, Redis Cluster) is one more module
//! implementing [`Broker`] and, for chat, [`ChatLog`].

mod local;
pub mod redis;

use std::{future::Future, pin::Pin, sync::Arc, sync::OnceLock};

use actix::{Message as ActixMessage, Recipient};
use bytes::Bytes;
use bytestring::ByteString;

pub use local::Local;
pub use redis::{BrokerError, RedisBroker, RedisSettings};

use super::GroupKey;
use crate::outbox::Frame;

/// What the cluster needs of a broker.
pub trait Broker: Send + Sync + 'static {
    /// A broadcast to a cluster-scoped group, already delivered on this node: carry it to the
    /// other nodes with members of the group, in the order of the calls.
    fn publish(&self, key: &GroupKey, frame: &Frame);
    /// This node now has (`true`) or no longer has (`false`) members of the group, counted per
    /// shard: a node receives a group's traffic while any of its shards has a member.
    fn interest(&self, key: &GroupKey, interested: bool);
    /// The cluster-wide chat log, when there is a cluster.
    fn chat(&self) -> Option<Arc<dyn ChatLog>>;
    /// The broker's state for `/status` and `/metrics` (`None`: no broker).
    fn status(&self) -> Option<BrokerStatus>;
    /// Whether the node has reached its broker at least once since it started (readiness).
    fn ready(&self) -> bool;
    /// The node is stopping: remove what it registered (presence) now, within `timeout`.
    fn retire(&self, timeout: std::time::Duration);
}

/// The broker's state as operators see it.
#[derive(Debug, Clone, Default)]
pub struct BrokerStatus {
    pub url: String,
    pub connected: bool,
    pub reconnects: u64,
    /// Broker commands that failed (publishes, chat scripts, heartbeats).
    pub publish_failures: u64,
    /// Broadcasts that reached this node's members but could not be sent to other nodes.
    pub unrouted: u64,
    pub last_error: Option<String>,
    /// Broker channels this node is subscribed to (one per group or chat room with members here).
    pub channels: u64,
}

/// A boxed future of the chat log.
pub type ChatFuture<T> = Pin<Box<dyn Future<Output = Result<T, ChatLogError>> + 'static>>;

/// Why the chat log could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChatLogError {
    #[error("the broker is not connected")]
    Unavailable,
    #[error("broker error: {0}")]
    Broker(String),
}

/// A room as the log holds it: its epoch, its last id and the messages it keeps, oldest first.
#[derive(Debug, Clone)]
pub struct RoomLog {
    pub epoch: String,
    pub last_id: u64,
    pub kept: Vec<(u64, ByteString)>,
    /// The room's members on every node, in join order.
    pub members: Vec<String>,
}

/// A chat message to be stamped by the log.
#[derive(Debug, Clone)]
pub struct Saying {
    pub room: String,
    pub nick: String,
    pub text: String,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
}

/// One of this node's chat members, as a resync gives it to the log.
#[derive(Debug, Clone)]
pub struct LogMember {
    pub room: String,
    pub conn: crate::SessionId,
    pub nick: String,
    /// The token's `sub` (connections of one user are one member in presence).
    pub user: Option<std::sync::Arc<str>>,
}

/// A chat member's name in the log: `node/connection`, unique in the cluster.
pub fn member_name(node: &str, conn: crate::SessionId) -> String {
    format!("{node}/{conn}")
}

/// The cluster-wide chat rooms: ids, history and members kept in the broker, events carried to
/// every node that watches the room. Each operation is one atomic step in the broker.
pub trait ChatLog: Send + Sync + 'static {
    /// For each message in turn: stamps the next id of its room, keeps it and sends it to every
    /// node watching the room; resolves to the ids. The messages reach the log in the order
    /// given (one pipeline), so one sender's messages get increasing ids.
    fn say(&self, messages: Vec<Saying>) -> ChatFuture<Vec<u64>>;
    /// Adds a member (a presence `join` event goes to the room, unless `user` was in it already
    /// on another connection); resolves to the members, one per user, in join order.
    fn join(
        &self,
        room: &str,
        conn: crate::SessionId,
        nick: &str,
        user: Option<&str>,
    ) -> ChatFuture<Vec<String>>;
    /// Removes a member (a presence `leave` event goes to the room if it was one, and the last
    /// connection of its user).
    fn leave(&self, room: &str, conn: crate::SessionId) -> ChatFuture<()>;
    /// Renames a member in a room (a `nick` event goes to the room).
    fn rename(&self, room: &str, conn: crate::SessionId, old: &str, new: &str) -> ChatFuture<()>;
    /// The room as it is now (created with a new epoch if the log has no such room).
    fn snapshot(&self, room: &str) -> ChatFuture<RoomLog>;
    /// After a broker outage: makes the log's members of this node exactly `members`, with
    /// presence events for what changed, and keeps the rooms.
    fn resync(&self, members: Vec<LogMember>) -> ChatFuture<()>;
    /// Keeps these rooms (their ids, epoch and history) alive for another while: rooms with
    /// members are kept, rooms without them expire as on a single node.
    fn keep(&self, rooms: Vec<String>) -> ChatFuture<()>;
    /// Starts (or stops) carrying the room's events to `to`.
    fn watch(&self, room: &str, to: Option<Recipient<RoomFeed>>);
}

/// What the broker tells the owner of this node's chat rooms about a watched room.
#[derive(Debug, ActixMessage)]
#[rtype(result = "()")]
pub struct RoomFeed {
    pub room: String,
    pub event: FeedEvent,
}

#[derive(Debug)]
pub enum FeedEvent {
    /// The room's events now reach this node (first time, or again after an outage: events
    /// published meanwhile were not received).
    Watching { again: bool },
    /// One event of the room, as the log published it.
    Event(Bytes),
    /// The broker is back after an outage (sent once, with an empty `room`): the log may have
    /// lost or kept stale members of this node.
    Reconnected,
}

static BROKER: OnceLock<Arc<dyn Broker>> = OnceLock::new();
static NODE_ID: OnceLock<String> = OnceLock::new();

/// Sets this node's broker and id, once, at start-up (before any worker starts).
pub fn install(broker: Arc<dyn Broker>, node_id: String) {
    let _ = BROKER.set(broker);
    let _ = NODE_ID.set(node_id);
}

/// This node's broker ([`Local`] when none was installed).
pub fn broker() -> &'static dyn Broker {
    static LOCAL: Local = Local;
    match BROKER.get() {
        Some(broker) => broker.as_ref(),
        None => &LOCAL,
    }
}

/// This node's id (`--node-id`), `"local"` when none was installed.
pub fn node_id() -> &'static str {
    NODE_ID.get().map_or("local", String::as_str)
}

/// A new chat epoch: 64 random bits as hex, so epochs differ across rooms, nodes and restarts.
/// The randomness is std's per-process hash keys, mixed with the time, a counter and the pid.
pub fn new_epoch() -> String {
    use std::{
        collections::hash_map::RandomState,
        hash::BuildHasher,
        sync::atomic::{AtomicU64, Ordering},
        time::{SystemTime, UNIX_EPOCH},
    };
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:016x}",
        RandomState::new().hash_one((nanos, count, std::process::id()))
    )
}
