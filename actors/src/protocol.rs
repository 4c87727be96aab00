//! The protocol plug-in interface.
//!
//! A protocol is chosen by `Sec-WebSocket-Protocol` and sees whole messages. It reacts through a
//! [`ProtocolCx`]: send to its own peer, close, join and leave rooms, broadcast to a room. It never
//! touches sockets, threads or the registry's internals. A built-in protocol is a file in
//! `protocols/` and one line in [`crate::protocols::BUILTIN`]; an application's own protocol is
//! an [`Opener::Custom`] in the table it installs ([`crate::protocols::install`]).

use std::{
    any::Any, future::Future, net::SocketAddr, pin::Pin, rc::Rc, sync::Arc, time::Duration,
    time::SystemTime,
};

use bytes::Bytes;
use bytestring::ByteString;

use crate::{
    access::Identity,
    config::ProtocolSettings,
    message::Message,
    outbox::{AfterClose, Delivery, Frame, Outbox},
    registry::{GroupKey, ShardCore},
    SessionId,
};

/// One WebSocket subprotocol's behaviour for one connection.
pub trait Protocol: 'static {
    /// The connection is open (the 101 has been sent).
    fn on_open(&mut self, _cx: &mut ProtocolCx<'_>) {}
    /// A whole message arrived (fragments are already reassembled, text is valid UTF-8).
    fn on_message(&mut self, cx: &mut ProtocolCx<'_>, message: Message);
    /// The connection is gone. Rooms are left automatically afterwards.
    fn on_close(&mut self, _cx: &mut ProtocolCx<'_>) {}
    /// How often [`Protocol::on_tick`] runs, if at all.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }
    /// Runs every [`Protocol::tick_interval`] while the connection is open.
    fn on_tick(&mut self, _cx: &mut ProtocolCx<'_>) {}
    /// An event sent to this connection through its [`Mailbox`] (e.g. the answer of an actor
    /// that owns shared state).
    fn on_event(&mut self, _cx: &mut ProtocolCx<'_>, _event: Box<dyn Any + Send>) {}
    /// The connection's token expires in `remaining` ([`EXPIRY_NOTICE`] before, or at once if
    /// less was left); unless it is renewed ([`ProtocolCx::renew_identity`]) the connection
    /// is then closed with 4001.
    fn on_expiring(&mut self, _cx: &mut ProtocolCx<'_>, _remaining: Duration) {}
}

/// How long before its token expires a connection is told ([`Protocol::on_expiring`]).
pub const EXPIRY_NOTICE: Duration = Duration::from_secs(30);

/// A handle to one connection that any thread may hold: deliver messages to its peer, or events
/// to its protocol. Sending to a connection that has gone is a no-op.
#[derive(Clone)]
pub struct Mailbox {
    pub(crate) session: actix::Addr<crate::session::Session>,
}

impl Mailbox {
    /// Sends a message to the connection's peer (subject to its backlog like any message).
    pub fn deliver(&self, message: Message) {
        self.session.do_send(crate::session::Deliver(message));
    }

    /// Hands an event to the connection's protocol ([`Protocol::on_event`]).
    pub fn event(&self, event: impl Any + Send) {
        self.session.do_send(crate::session::Event(Box::new(event)));
    }
}

/// A registered protocol: its name on the wire and how to start it for a new connection.
pub struct ProtocolSpec {
    /// The name a client offers in `Sec-WebSocket-Protocol`.
    pub name: &'static str,
    /// Makes the protocol's state for a new connection ([`ProtocolSpec::start`]).
    pub open: Opener,
    /// How a message published from outside (the HTTP publish API) reaches a room of this
    /// protocol, for protocols that own their rooms' state (chat stamps ids and keeps history).
    /// `None`: it is broadcast to the room's members as it is.
    pub publish: Option<PublishHook>,
    /// Whether the protocol's rooms are this node's or the whole cluster's.
    pub scope: Scope,
    /// The handshake URL's query parameter naming the room a connection joins when it opens
    /// (`lws-mirror-protocol`: `?mirror=NAME`), so that the handshake can check that the
    /// connection's token allows that room. `None`: rooms are chosen later (or not at all).
    pub room_param: Option<&'static str>,
    /// Whether connections of this protocol may negotiate permessage-deflate. `false` for a
    /// protocol whose messages are never worth compressing and whose libwebsockets clients
    /// cannot take it: libwebsockets' client offers it on `dumb-increment-protocol`, whose
    /// receive buffer (10 bytes) is too small for its inflater, and stalls when a server
    /// accepts (libwebsockets' own server never negotiates it on that protocol).
    pub compression: bool,
}

/// How a protocol's per-connection state is made.
#[derive(Clone)]
pub enum Opener {
    /// A built-in protocol: a plain function, with the built-ins' settings.
    Builtin(fn(&ConnectionInfo, &ProtocolSettings) -> Box<dyn Protocol>),
    /// An application's protocol: a factory that may hold the application's own state (shared
    /// by every connection of the protocol, on every worker, hence `Send + Sync`).
    Custom(CustomOpener),
}

/// The factory of an application's protocol ([`Opener::Custom`]).
pub type CustomOpener = Arc<dyn Fn(&ConnectionInfo) -> Box<dyn Protocol> + Send + Sync>;

impl ProtocolSpec {
    /// The protocol's state for a connection that has just been accepted.
    pub fn start(&self, info: &ConnectionInfo, settings: &ProtocolSettings) -> Box<dyn Protocol> {
        match &self.open {
            Opener::Builtin(open) => open(info, settings),
            Opener::Custom(open) => open(info),
        }
    }
}

/// Where a protocol's rooms live when several nodes form a cluster (`--broker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Each node has its own rooms (`lws-status`, `dumb-increment-protocol`); also protocols
    /// that carry their rooms across the cluster themselves (`chat`, through the chat log).
    Node,
    /// A room's broadcasts reach its members on every node, through the broker.
    Cluster,
}

/// Delivers an outside message to a room; resolves to the connections it reached.
pub type PublishHook = fn(room: &str, text: ByteString) -> Pin<Box<dyn Future<Output = usize>>>;

/// What is known about a connection from its handshake.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The connection's id, unique in the process (used to close it from outside).
    pub id: SessionId,
    /// The protocol the connection speaks.
    pub protocol: &'static str,
    /// The peer's address, when the transport knows it.
    pub peer: Option<SocketAddr>,
    /// The handshake request's path.
    pub path: Box<str>,
    /// The handshake request's query string, without the `?` (see [`ConnectionInfo::query_param`]).
    pub query: Box<str>,
    /// The client's `User-Agent`, empty when it sent none. Shared with the status board rather than copied.
    pub user_agent: Arc<str>,
    /// When the handshake was accepted.
    pub connected_at: SystemTime,
    /// Who the connection is, from its token (`None`: tokens are off).
    pub identity: Option<Arc<Identity>>,
}

impl ConnectionInfo {
    /// The first value of a query parameter of the handshake URL, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        ConnectionInfo::query_value(&self.query, name)
    }

    /// The first value of a parameter of a query string, percent-decoded.
    pub fn query_value(query: &str, name: &str) -> Option<String> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .ok()?
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

/// The connection's side of the world, as a session holds it.
pub(crate) struct Link {
    pub(crate) info: Rc<ConnectionInfo>,
    pub(crate) outbox: Rc<Outbox>,
    pub(crate) shard: Rc<ShardCore>,
    pub(crate) rooms: Vec<GroupKey>,
    pub(crate) mailbox: Option<Mailbox>,
    /// Whether this connection's protocol is cluster-scoped ([`Scope::Cluster`]).
    pub(crate) cluster: bool,
    /// Who the connection is now: the handshake's identity, or the one of a later refresh.
    /// The session closes the connection when it expires.
    pub(crate) identity: Option<Arc<Identity>>,
    /// Set when the protocol renews the identity: the session then watches the new expiry.
    pub(crate) renewed: bool,
}

impl Link {
    fn group(&self, room: &str) -> GroupKey {
        GroupKey::scoped(self.info.protocol, room, self.cluster)
    }
}

/// What a protocol can do, for the duration of one callback.
pub struct ProtocolCx<'a> {
    pub(crate) link: &'a mut Link,
}

impl ProtocolCx<'_> {
    /// What is known about this connection from its handshake.
    pub fn info(&self) -> &ConnectionInfo {
        &self.link.info
    }

    /// Who the connection is (`None`: tokens are off).
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.link.identity.as_ref()
    }

    /// Replaces the connection's identity with that of a newer token of the same user (the
    /// protocol checks that it is the same `sub`); the connection now expires with it.
    pub fn renew_identity(&mut self, identity: Arc<Identity>) {
        self.link.identity = Some(identity);
        self.link.renewed = true;
    }

    /// Bytes queued for this connection's socket that it has not taken yet.
    pub fn backlog(&self) -> u64 {
        self.link.outbox.backlog()
    }

    /// A handle other threads and actors can use to reach this connection.
    pub fn mailbox(&self) -> Mailbox {
        self.link
            .mailbox
            .clone()
            .expect("the mailbox is set when the session starts")
    }

    /// Sends a whole message to this connection's peer.
    pub fn send(&mut self, message: &Message) -> Delivery {
        self.link.outbox.send(Frame::message(message))
    }

    /// Sends a text message to this connection's peer.
    pub fn send_text(&mut self, text: impl Into<ByteString>) -> Delivery {
        self.send(&Message::Text(text.into()))
    }

    /// Sends a binary message to this connection's peer.
    pub fn send_binary(&mut self, data: impl Into<Bytes>) -> Delivery {
        self.send(&Message::Binary(data.into()))
    }

    /// Sends a message as a series of fragments (a first frame, continuations, a final one) of
    /// at most `fragment_size` bytes each, as libwebsockets' `LWS_WRITE_NO_FIN` does. The
    /// fragments are queued together, so nothing else is written between them. Text may be cut
    /// inside a character: only the whole message must be UTF-8.
    pub fn send_fragmented(&mut self, message: &Message, fragment_size: usize) -> Delivery {
        let first = Frame::message(message);
        let (opcode, payload) = (first.opcode, first.payload);
        let size = fragment_size.max(1);
        let count = payload.len().div_ceil(size).max(1);
        let frames = (0..count).map(move |index| {
            let start = index * size;
            let end = (start + size).min(payload.len());
            let frame_opcode = if index == 0 {
                opcode
            } else {
                actix_http::ws::OpCode::Continue
            };
            Frame::data(frame_opcode, index + 1 == count, payload.slice(start..end))
        });
        self.link.outbox.send_all(frames)
    }

    /// Closes the connection with this code and reason (the peer's close reply is awaited).
    pub fn close(&mut self, code: u16, reason: &str) {
        self.link
            .outbox
            .close_with(Some((code, reason)), AfterClose::AwaitPeer);
    }

    /// Joins a room of this protocol (rooms of different protocols never mix).
    pub fn join(&mut self, room: &str) {
        let key = self.link.group(room);
        if !self.link.rooms.contains(&key) {
            self.link
                .shard
                .join(&key, self.link.info.id, &self.link.outbox);
            // Most connections are in one room: grow exactly, not by the usual four-key step
            // (this list lives as long as the connection).
            self.link.rooms.reserve_exact(1);
            self.link.rooms.push(key);
        }
    }

    /// Leaves a room of this protocol (nothing happens if the connection is not a member).
    pub fn leave(&mut self, room: &str) {
        let key = self.link.group(room);
        if let Some(position) = self.link.rooms.iter().position(|joined| *joined == key) {
            self.link.rooms.swap_remove(position);
            self.link.shard.leave(&key, self.link.info.id);
        }
    }

    /// The rooms this connection is a member of.
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.link.rooms.iter().map(|key| key.room())
    }

    /// Sends a message to every member of a room of this protocol, on every worker, this
    /// connection included if it is a member (and on every node, for a cluster-scoped protocol).
    /// Returns the members reached on this worker.
    pub fn broadcast(&mut self, room: &str, message: &Message) -> usize {
        let key = self.link.group(room);
        self.link.shard.broadcast(&key, Frame::message(message))
    }
}
