//! The Redis broker: broadcasts of cluster-scoped groups over Redis pub/sub, one channel per
//! group, subscribed only by nodes with members of it; chat rooms as Lua scripts over a hash
//! and a stream per room (see [`scripts`]).
//!
//! The connections live on a thread of their own with its own runtime ([`link`]), never on an
//! actix worker: a slow or lost broker never stalls the workers. Workers hand it their
//! broadcasts through a queue and carry on.

mod chat_log;
mod link;
mod scripts;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

use super::{Broker, BrokerStatus, ChatLog, GroupKey};
use crate::outbox::Frame;

/// How a Redis broker behaves.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    pub node_id: String,
    /// A node silent this long is gone: its chat members leave.
    pub presence_ttl: Duration,
    /// How often the node checks its own subscription end to end.
    pub check_interval: Duration,
    /// chat: messages each room keeps.
    pub history: usize,
}

/// Why the broker could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("--broker {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("--node-id `{0}`: 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' or '.'")]
    BadNodeId(String),
    #[error("cannot start the broker thread: {0}")]
    Thread(std::io::Error),
}

/// Counters and state shared by the broker thread and the readers of `/status`.
#[derive(Default)]
struct Stats {
    connected: AtomicBool,
    ever_connected: AtomicBool,
    reconnects: AtomicU64,
    failures: AtomicU64,
    unrouted: AtomicU64,
    channels: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    fn failed(&self, error: &dyn std::fmt::Display) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let text = error.to_string();
        log::warn!("broker: {text}");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
    }
}

/// What the workers and the chat owner ask of the broker thread.
enum Command {
    Publish {
        channel: String,
        payload: Bytes,
    },
    Interest {
        channel: String,
        route: Option<link::Route>,
    },
    Retire {
        done: std::sync::mpsc::Sender<()>,
    },
}

/// The command connection of the moment (none while the broker is unreachable), shared with
/// the chat log, which runs its scripts from the chat owner's thread.
type SharedConnection = Arc<Mutex<Option<MultiplexedConnection>>>;

pub struct RedisBroker {
    url: String,
    commands: mpsc::UnboundedSender<Command>,
    stats: Arc<Stats>,
    chat: Arc<chat_log::RedisChatLog>,
}

impl RedisBroker {
    /// Checks the settings and starts the broker thread; connecting happens there, with retries.
    pub fn start(settings: RedisSettings) -> Result<Arc<RedisBroker>, BrokerError> {
        if !valid_node_id(&settings.node_id) {
            return Err(BrokerError::BadNodeId(settings.node_id));
        }
        let client =
            redis::Client::open(settings.url.as_str()).map_err(|err| BrokerError::BadUrl {
                url: settings.url.clone(),
                reason: err.to_string(),
            })?;
        if !matches!(
            client.get_connection_info().addr(),
            redis::ConnectionAddr::Tcp(..)
        ) {
            return Err(BrokerError::BadUrl {
                url: settings.url,
                reason: "only redis://HOST:PORT[/DB] is supported".to_owned(),
            });
        }
        let (commands, receiver) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let connection: SharedConnection = Arc::default();
        let chat = Arc::new(chat_log::RedisChatLog::new(
            &settings,
            connection.clone(),
            stats.clone(),
            commands.clone(),
        ));
        let link = link::Link::new(
            client,
            settings.clone(),
            receiver,
            stats.clone(),
            connection,
        );
        std::thread::Builder::new()
            .name("broker".to_owned())
            .spawn(move || link.run())
            .map_err(BrokerError::Thread)?;
        Ok(Arc::new(RedisBroker {
            url: settings.url,
            commands,
            stats,
            chat,
        }))
    }
}

fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Broker for RedisBroker {
    fn publish(&self, key: &GroupKey, frame: &Frame) {
        let payload = link::encode_broadcast(crate::registry::broker::node_id(), frame);
        let command = Command::Publish {
            channel: scripts::group_channel(key.protocol(), key.room()),
            payload,
        };
        if self.commands.send(command).is_err() {
            self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn interest(&self, key: &GroupKey, interested: bool) {
        let _ = self.commands.send(Command::Interest {
            channel: scripts::group_channel(key.protocol(), key.room()),
            route: interested.then(|| link::Route::Group(key.clone())),
        });
    }

    fn chat(&self) -> Option<Arc<dyn ChatLog>> {
        Some(self.chat.clone())
    }

    fn status(&self) -> Option<BrokerStatus> {
        let stats = &self.stats;
        Some(BrokerStatus {
            url: self.url.clone(),
            connected: stats.connected.load(Ordering::Relaxed),
            reconnects: stats.reconnects.load(Ordering::Relaxed),
            publish_failures: stats.failures.load(Ordering::Relaxed),
            unrouted: stats.unrouted.load(Ordering::Relaxed),
            last_error: stats
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            channels: stats.channels.load(Ordering::Relaxed),
        })
    }

    fn ready(&self) -> bool {
        self.stats.ever_connected.load(Ordering::Relaxed)
    }

    fn retire(&self, timeout: Duration) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.commands.send(Command::Retire { done }).is_ok() {
            let _ = wait.recv_timeout(timeout);
        }
    }
}

/// Writes `origin` (one length byte, then the id) before `body`: how a node recognises, and
/// skips, its own broadcasts when they come back from the broker.
fn with_origin(origin: &str, kind: u8, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + origin.len() + body.len());
    buf.put_u8(origin.len() as u8);
    buf.put_slice(origin.as_bytes());
    buf.put_u8(kind);
    buf.put_slice(body);
    buf.freeze()
}
