//! Settings every session on every worker shares, read-only.

use std::{os::fd::RawFd, sync::Arc, time::Duration};

use crate::access::TokenVerifier;

/// What happens to a connection whose outbound backlog exceeds `max_backlog`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Close it with 1008 "slow consumer" (and free what it had queued).
    Close,
    /// Skip messages for it until it has drained below the limit.
    Drop,
}

/// Limits and timers of WebSocket sessions.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub max_message_size: usize,
    pub max_backlog: usize,
    pub slow_consumer: SlowConsumerPolicy,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub close_timeout: Duration,
    /// Under load, a worker writes broadcasts to each socket at most once per this window.
    pub write_coalesce: Duration,
}

/// The raw fd of an accepted connection, recorded when it is accepted, so that a connection
/// whose peer stopped reading can be ended even though its actor cannot run. Its kind, set from
/// the type of the accepted stream, decides what may be done with the fd (see the `socket`
/// module): nothing reads a flag to tell a TLS connection from a plain one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionFd {
    /// Plain TCP: the fd carries the WebSocket bytes themselves, so frames may be written to it
    /// directly and it may be half-closed.
    Plain(RawFd),
    /// TLS: the fd carries encrypted records that only the TLS layer may write. It may only be
    /// shut down both ways, to end a peer so stuck that the connection's writer never runs.
    Tls(RawFd),
}

/// Settings of the protocol plug-ins, given to each protocol when a connection opens.
#[derive(Debug, Clone)]
pub struct ProtocolSettings {
    /// `dumb-increment-protocol`: interval between counter messages.
    pub increment_interval: Duration,
    /// `chat`: messages each room keeps for recovery.
    pub chat_history: usize,
    /// `chat`: longest message text, in bytes.
    pub chat_max_text: usize,
    /// `chat`: longest nickname, in characters.
    pub chat_max_nick: usize,
    /// `chat`: rooms one connection may be in at once.
    pub chat_max_rooms: usize,
    /// `chat`: sustained messages per second per connection.
    pub chat_rate: f64,
    /// `chat`: burst of messages allowed above the sustained rate.
    pub chat_burst: f64,
    /// The checker of connection tokens (`None`: tokens are off); `chat` uses it for `refresh`.
    pub tokens: Option<Arc<TokenVerifier>>,
}

impl Default for ProtocolSettings {
    fn default() -> Self {
        ProtocolSettings {
            increment_interval: Duration::from_millis(50),
            chat_history: 100,
            chat_max_text: 4096,
            chat_max_nick: 32,
            chat_max_rooms: 16,
            chat_rate: 20.0,
            chat_burst: 40.0,
            tokens: None,
        }
    }
}
