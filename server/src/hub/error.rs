//! What can go wrong building a hub, and using its handle.

use std::io;

use switchboard_actors::{access::token::KeyError, registry::broker::BrokerError};

/// Why a [`HubBuilder`](super::HubBuilder) could not build a hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A protocol name is not a valid `Sec-WebSocket-Protocol` token (RFC 6455 §4.1: visible
    /// ASCII, no separators such as `,` `;` `/` or spaces, not empty).
    #[error("`{0}` is not a valid WebSocket protocol name (visible ASCII, no separators)")]
    InvalidProtocolName(String),
    /// Two protocols were registered under one name (a built-in's included).
    #[error("protocol `{0}` is registered twice; protocol names must be unique")]
    DuplicateProtocol(String),
    /// A built-in protocol was named that does not exist.
    #[error("there is no built-in protocol `{name}`; the built-ins are: {known}")]
    UnknownBuiltin {
        /// The name given.
        name: String,
        /// The built-in protocols, comma-separated.
        known: String,
    },
    /// The default protocol is not among the protocols the hub speaks.
    #[error("unknown default protocol `{name}`; this hub speaks: {known}")]
    UnknownDefaultProtocol {
        /// The name given.
        name: String,
        /// The hub's protocols, comma-separated.
        known: String,
    },
    /// More protocols than the per-protocol metrics can track.
    #[error("{count} protocols registered; at most {max} are supported")]
    TooManyProtocols {
        /// How many were registered.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A hub was built already in this process (the registry, the metrics and the broker are
    /// process-wide: see [`HubBuilder::build`](super::HubBuilder::build)).
    #[error("a Switchboard hub was built already in this process; build one and clone it")]
    AlreadyBuilt,
    /// The static directory cannot be read.
    #[error("static directory {path}: {source}")]
    StaticDir {
        /// The directory given.
        path: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// The static directory is not a directory.
    #[error("static directory {0} is not a directory")]
    StaticDirNotDir(String),
    /// The keys of the connection tokens cannot be loaded.
    #[error("connection tokens: {0}")]
    Keys(#[from] KeyError),
    /// The cluster's broker cannot be joined.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Why a [`HubHandle`](super::HubHandle) call was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandleError {
    /// The hub does not speak this protocol.
    #[error("unknown protocol `{name}`; this hub speaks: {known}")]
    UnknownProtocol {
        /// The name given.
        name: String,
        /// The hub's protocols, comma-separated.
        known: String,
    },
    /// A close code an endpoint may not send (RFC 6455 §7.4: 1000–1003, 1007–1011, or 3000–4999).
    #[error("close code {0} may not be sent; use 1000-1003, 1007-1011 or 3000-4999")]
    InvalidCloseCode(u16),
    /// A close reason longer than a close frame can carry (123 bytes).
    #[error("a close reason is at most 123 bytes; this one has {0}")]
    ReasonTooLong(usize),
}
