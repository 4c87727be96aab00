//! Settings every session on every worker shares, read-only.

use std::{os::fd::RawFd, time::Duration};

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
}

/// The raw fd of an accepted TCP connection, recorded when it is accepted, so that a connection
/// whose peer stopped reading can be ended even though its actor cannot run.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionFd(pub RawFd);

/// Settings of the protocol plug-ins, given to each protocol when a connection opens.
#[derive(Debug, Clone, Default)]
pub struct ProtocolSettings {}
