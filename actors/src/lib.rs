//! Connection actors, the sharded registry and the protocol plug-ins of Switchboard.
//!
//! See DESIGN.md: a [`session::Session`] actor per connection, a [`registry`] shard per worker,
//! protocols as plug-ins ([`protocol::Protocol`], [`protocols`]). The actix-web-actors specifics
//! are confined to [`transport`].

pub mod access;
pub mod assembler;
pub mod close;
pub mod config;
pub mod deflate;
pub mod frame_guard;
pub mod inbound;
pub mod message;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod protocols;
pub mod registry;
pub mod session;
pub mod slots;
mod socket;
pub mod status_board;
pub mod transport;

pub use config::{ConnectionFd, ProtocolSettings, SessionConfig, SlowConsumerPolicy};
pub use message::Message;

/// The parsers the fuzz targets in `fuzz/` drive; not an interface of the actors.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::protocols::chat::{
        error::ChatError,
        limits::{check_room, Limits, MAX_ROOM},
        wire::{parse as parse_chat_request, Request as ChatRequest},
    };
}

/// A connection's id, unique in the process.
pub type SessionId = u64;

/// Hands out connection ids.
pub fn next_session_id() -> SessionId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
