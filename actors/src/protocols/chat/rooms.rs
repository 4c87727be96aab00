//! The single owner of every chat room: one actor per process, on its own thread. In a cluster
//! it owns this node's copies of the rooms, fed by the cluster's chat log ([`super::cluster`]).
//!
//! Connections live on many workers, but a room's ids, history and member list must have exactly
//! one writer, or two workers could stamp the same id. So every request that changes a room is
//! sent here, handled one at a time, and its effects fanned out with [`publish`]: one shared
//! payload per event, one message per worker shard, each shard delivering to its own members.
//!
//! Everything this actor sends goes through [`publish`] from this one thread, so every shard,
//! and so every connection, sees this actor's events in the order it produced them. That
//! includes the answers meant for one connection (`joined`, `left`, the confirmation of a nick
//! change): they are published to the connection's private reply group ([`reply_room`]), which
//! puts them in the same order as the room events around them (see the module documentation of
//! [`super`] for why that matters).

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use actix::{
    Actor, Addr, Arbiter, AsyncContext, Context, Handler, Message as ActixMessage, MessageResult,
};
use bytestring::ByteString;

use super::{
    cluster::Cluster,
    error::ChatError,
    room::{now_ms, MemberKey, Room},
    wire::{Event, Presence},
};
use crate::{
    message::Message,
    outbox::Frame,
    protocol::Mailbox,
    registry::{broker::broker, publish, publish_counted, GroupKey},
    SessionId,
};

/// The protocol's name, which is also the protocol part of its registry groups.
pub const PROTOCOL: &str = "chat";

/// How long a room without members keeps its history (and epoch) for clients coming back.
const EMPTY_ROOM_TTL: Duration = Duration::from_secs(300);
/// How often rooms empty for longer than [`EMPTY_ROOM_TTL`] are forgotten.
const SWEEP_PERIOD: Duration = Duration::from_secs(30);

/// The registry group only this connection is in: the owner's answers to it. Room names
/// cannot contain control characters, so this never names a room.
pub fn reply_room(conn: SessionId) -> String {
    format!("\0{conn}")
}

/// What connections ask of the owner. Validation (sizes, rates, membership) is done before, on
/// the connection's thread; these are the requests that passed.
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub enum ToRooms {
    Join {
        conn: SessionId,
        room: String,
        nick: String,
        /// The token's `sub`: connections of one user are one member.
        user: Option<Arc<str>>,
        since: Option<u64>,
        epoch: Option<String>,
        /// Where to say that the join could not be done (cluster: the broker is unreachable).
        mailbox: Mailbox,
    },
    Leave {
        conn: SessionId,
        room: String,
    },
    Say {
        conn: SessionId,
        room: String,
        text: String,
    },
    Nick {
        conn: SessionId,
        nick: String,
    },
    /// The connection is gone: it leaves every room.
    Gone {
        conn: SessionId,
    },
}

/// Tells a connection's protocol that its join was refused: it is not in the room after all.
pub struct JoinRefused {
    pub room: String,
    pub error: ChatError,
}

/// The process's owner of rooms, started on first use.
struct Owner {
    addr: Addr<ChatRooms>,
    /// Its thread; kept so the owner lives as long as the process.
    _arbiter: Arbiter,
}

static OWNER: OnceLock<Owner> = OnceLock::new();

/// The owner of all rooms, started on its own arbiter the first time a chat connection opens.
/// `history` (`--history`) is the same for every connection, so the first one's is used.
pub fn owner(history: usize) -> Addr<ChatRooms> {
    OWNER
        .get_or_init(|| {
            let arbiter = Arbiter::new();
            let addr = ChatRooms::start_in_arbiter(&arbiter.handle(), move |_| ChatRooms {
                history,
                rooms: HashMap::new(),
                conns: HashMap::new(),
                cluster: broker().chat().map(|log| Cluster::new(log, history)),
            });
            Owner {
                addr,
                _arbiter: arbiter,
            }
        })
        .addr
        .clone()
}

/// The nick of messages published from outside (the HTTP publish API).
pub const ANNOUNCER: &str = "server";

/// A message published from outside to a room: stamped, kept and sent like any other, under
/// the nick [`ANNOUNCER`]. A room nobody has joined does not exist: nobody is reached.
pub fn announce(room: &str, text: ByteString) -> Pin<Box<dyn Future<Output = usize>>> {
    let Some(owner) = OWNER.get() else {
        return Box::pin(std::future::ready(0));
    };
    let request = owner.addr.send(Announce {
        room: room.to_owned(),
        text,
    });
    Box::pin(async move {
        match request.await {
            Ok(reached) => reached.await,
            Err(_) => 0,
        }
    })
}

/// See [`announce`]. The owner stamps the message and queues it to every shard in the same
/// turn (so it keeps its place among the room's messages), and answers with the count to come.
#[derive(ActixMessage)]
#[rtype(result = "Reach")]
struct Announce {
    room: String,
    text: ByteString,
}

/// The count of connections an announcement will have reached.
type Reach = Pin<Box<dyn Future<Output = usize> + Send>>;

impl Handler<Announce> for ChatRooms {
    type Result = MessageResult<Announce>;

    fn handle(&mut self, announce: Announce, ctx: &mut Context<Self>) -> Self::Result {
        if self.cluster.is_some() {
            return MessageResult(self.cluster_announce(&announce.room, &announce.text, ctx));
        }
        let Some(state) = self.rooms.get_mut(&announce.room) else {
            let nobody: Reach = Box::pin(std::future::ready(0));
            return MessageResult(nobody);
        };
        let event = state.say(&announce.room, ANNOUNCER, &announce.text, now_ms());
        let key = GroupKey::new(PROTOCOL, &announce.room);
        let reach: Reach = Box::pin(publish_counted(&key, Frame::message(&Message::Text(event))));
        MessageResult(reach)
    }
}

/// What the owner knows of a connection: its nick, its user (token `sub`) and its rooms.
pub(super) struct Conn {
    pub(super) nick: String,
    pub(super) user: Option<Arc<str>>,
    pub(super) rooms: Vec<String>,
}

impl Conn {
    pub(super) fn member_key(&self, conn: SessionId) -> MemberKey {
        MemberKey::of(conn, self.user.as_ref())
    }
}

pub struct ChatRooms {
    history: usize,
    /// Every room (single node); unused in a cluster, where [`Cluster`] keeps copies.
    rooms: HashMap<String, Room>,
    pub(super) conns: HashMap<SessionId, Conn>,
    /// With a broker: the cluster's rooms.
    pub(super) cluster: Option<Cluster>,
}

impl Actor for ChatRooms {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(SWEEP_PERIOD, |rooms, ctx| {
            if rooms.cluster.is_some() {
                rooms.keep_rooms(ctx);
            } else {
                rooms.forget_empty(Instant::now());
            }
        });
    }
}

impl Handler<ToRooms> for ChatRooms {
    type Result = ();

    fn handle(&mut self, request: ToRooms, ctx: &mut Context<Self>) {
        if self.cluster.is_some() {
            return self.cluster_request(request, ctx);
        }
        match request {
            ToRooms::Join {
                conn,
                room,
                nick,
                user,
                since,
                epoch,
                ..
            } => self.join(conn, room, nick, user, since, epoch.as_deref()),
            ToRooms::Leave { conn, room } => self.leave(conn, &room),
            ToRooms::Say { conn, room, text } => self.say(conn, &room, &text),
            ToRooms::Nick { conn, nick } => self.nick(conn, nick),
            ToRooms::Gone { conn } => self.gone(conn),
        }
    }
}

impl ChatRooms {
    /// Adds the member, tells the others (unless the user was in the room already, on another
    /// connection), then answers the joiner. The joiner is already in the room's registry group,
    /// so everything published after this reaches it.
    fn join(
        &mut self,
        conn: SessionId,
        room: String,
        nick: String,
        user: Option<Arc<str>>,
        since: Option<u64>,
        epoch: Option<&str>,
    ) {
        let history = self.history;
        let state = self
            .rooms
            .entry(room.clone())
            .or_insert_with(|| Room::new(history, Instant::now()));
        let key = MemberKey::of(conn, user.as_ref());
        if state.is_member(&key, conn) {
            return;
        }
        if state.add_member(key, conn, &nick) {
            publish_room(
                &room,
                Event::Presence {
                    room: &room,
                    event: Presence::Join,
                    nick: &nick,
                }
                .encode(),
            );
        }
        reply(conn, state.joined(&room, &nick, since, epoch));
        let entry = self.conns.entry(conn).or_insert_with(|| Conn {
            nick: nick.clone(),
            user,
            rooms: Vec::new(),
        });
        entry.nick = nick;
        entry.rooms.push(room);
    }

    fn leave(&mut self, conn: SessionId, room: &str) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        entry.rooms.retain(|joined| joined != room);
        let key = entry.member_key(conn);
        self.remove_member(conn, &key, room);
        reply(conn, Event::Left { room }.encode());
    }

    /// Stamps the message (id, epoch, time), keeps it, and sends it to every member, the
    /// sender included: that copy is the sender's confirmation.
    fn say(&mut self, conn: SessionId, room: &str, text: &str) {
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        let Some(entry) = self.conns.get(&conn) else {
            return;
        };
        if !state.is_member(&entry.member_key(conn), conn) {
            return;
        }
        let nick = entry.nick.as_str();
        publish_room(room, state.say(room, nick, text, now_ms()));
    }

    /// Renames the connection in each of its rooms (each room is told), then confirms.
    fn nick(&mut self, conn: SessionId, nick: String) {
        let entry = self.conns.entry(conn).or_insert_with(|| Conn {
            nick: nick.clone(),
            user: None,
            rooms: Vec::new(),
        });
        let old = std::mem::replace(&mut entry.nick, nick);
        let key = entry.member_key(conn);
        for room in &entry.rooms {
            if let Some(state) = self.rooms.get_mut(room) {
                state.rename_member(&key, &entry.nick);
            }
            if old != entry.nick {
                publish_room(
                    room,
                    Event::Nick {
                        room: Some(room),
                        old: &old,
                        new: &entry.nick,
                    }
                    .encode(),
                );
            }
        }
        reply(
            conn,
            Event::Nick {
                room: None,
                old: &old,
                new: &entry.nick,
            }
            .encode(),
        );
    }

    fn gone(&mut self, conn: SessionId) {
        let Some(entry) = self.conns.remove(&conn) else {
            return;
        };
        let key = entry.member_key(conn);
        for room in &entry.rooms {
            self.remove_member(conn, &key, room);
        }
    }

    /// Removes a connection from the room, and tells the room if its member is gone.
    fn remove_member(&mut self, conn: SessionId, key: &MemberKey, room: &str) {
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        if let Some(nick) = state.remove_member(key, conn, Instant::now()) {
            publish_room(
                room,
                Event::Presence {
                    room,
                    event: Presence::Leave,
                    nick: &nick,
                }
                .encode(),
            );
        }
    }

    /// Rooms empty for long enough are dropped; one joined again later starts a new epoch.
    fn forget_empty(&mut self, now: Instant) {
        self.rooms.retain(|_, room| {
            room.empty_since()
                .is_none_or(|since| now.saturating_duration_since(since) < EMPTY_ROOM_TTL)
        });
    }
}

/// Sends an event to every member of a room, on every worker (of this node).
pub(super) fn publish_room(room: &str, event: ByteString) {
    publish(
        &GroupKey::new(PROTOCOL, room),
        Frame::message(&Message::Text(event)),
    );
}

/// Sends an event to one connection, in order with the room events (see the module docs).
pub(super) fn reply(conn: SessionId, event: ByteString) {
    publish_room(&reply_room(conn), event);
}
