//! `chat`: rooms with nicknames, JSON over text messages (format: [`wire`], README.md).
//!
//! Each connection's side ([`Chat`], on its worker's thread) checks what the client sends (rate,
//! sizes, rooms per connection) and answers mistakes with an `error` event, keeping the
//! connection open. What passes goes to the one owner of all rooms ([`rooms::ChatRooms`]), which
//! stamps ids, keeps the history and the member lists, and publishes every event through the
//! registry to the room's group, on every worker.
//!
//! # Why a joiner sees no gap, no duplicate, and `joined` before newer messages
//!
//! The owner handles requests one at a time and publishes every event from its one thread, so
//! each shard (and so each connection) receives the owner's events in the order it produced
//! them. Its answer to a join (`joined`) is published the same way, to a group only the joiner
//! is in (its reply group, joined when the connection opens), so it lands in that same order.
//!
//! A join goes: (1) the session joins the room's registry group, (2) then sends `Join` to the
//! owner, (3) the owner, at some instant T, adds the member, publishes a presence event and then
//! `joined` with the history after `since` up to the room's last id H (`last_id`) and the
//! members as of T. Every event the owner publishes after T, ids above H included, reaches the
//! joiner's shard after (1), since it was sent after the owner received (2), which (1) preceded
//! on the same thread; so the joiner receives it, and after `joined`. Hence: `joined`, then
//! exactly the messages H+1, H+2, … in order, with nothing missing between the history and
//! them, and nothing repeated.
//!
//! One thing the server cannot prevent with the current registry: between (1) and T, the shard
//! may still deliver room events the owner published *before* T (ids ≤ H, presence events
//! already reflected in `members`). They arrive *before* `joined` and are all contained in it,
//! so clients ignore a room's events until its `joined` (README.md says so). Filtering them
//! here would need the registry to admit a member at a point of the owner's event order.
//!
//! Leaving is the mirror image: the session leaves the group at once, so nothing of the room
//! arrives after the client asked to leave except the owner's `left`.

mod cluster;
pub(crate) mod error;
pub(crate) mod limits;
mod room;
mod rooms;
pub(crate) mod wire;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use actix::Addr;

use self::{
    error::{ChatError, Forbidden},
    limits::{check_room, Limits, TokenBucket},
    rooms::{reply_room, ChatRooms, JoinRefused, ToRooms},
    wire::{Event, Request},
};
use crate::{
    access::{identity::may_join, TokenVerifier},
    config::ProtocolSettings,
    message::Message,
    protocol::{ConnectionInfo, Opener, Protocol, ProtocolCx, ProtocolSpec, Scope},
    SessionId,
};

pub const SPEC: ProtocolSpec = ProtocolSpec {
    name: rooms::PROTOCOL,
    open: Opener::Builtin(|info, settings| Box::new(Chat::new(info, settings))),
    publish: Some(rooms::announce),
    scope: Scope::Node,
    room_param: None,
    compression: true,
};

/// One chat connection: its nick, the rooms it asked to be in, its rate limit.
struct Chat {
    conn: SessionId,
    limits: Limits,
    bucket: TokenBucket,
    nick: Option<String>,
    /// The rooms joined (or being joined), as the owner will see them.
    rooms: Vec<String>,
    owner: Addr<ChatRooms>,
    /// Whether the owner has heard of this connection (and so must hear that it is gone).
    known_to_owner: bool,
    /// The checker of connection tokens, for `refresh` (`None`: tokens are off).
    tokens: Option<Arc<TokenVerifier>>,
}

impl Chat {
    fn new(info: &ConnectionInfo, settings: &ProtocolSettings) -> Chat {
        Chat {
            conn: info.id,
            limits: Limits::new(settings),
            bucket: TokenBucket::new(settings.chat_rate, settings.chat_burst, Instant::now()),
            // With a token, the nick is the token's name, for good.
            nick: info.identity.as_ref().map(|identity| identity.name.clone()),
            rooms: Vec::new(),
            owner: rooms::owner(settings.chat_history),
            known_to_owner: false,
            tokens: settings.tokens.clone(),
        }
    }

    fn tell(&mut self, request: ToRooms) {
        self.known_to_owner = true;
        self.owner.do_send(request);
    }

    fn handle(&mut self, cx: &mut ProtocolCx<'_>, message: Message) -> Result<(), ChatError> {
        self.bucket.take(Instant::now())?;
        let Message::Text(text) = message else {
            return Err(ChatError::BinaryFrame);
        };
        self.limits.check_request_size(text.len())?;
        match wire::parse(&text)? {
            Request::Join {
                room,
                nick,
                since,
                epoch,
            } => self.join(cx, room, nick, since, epoch),
            Request::Leave { room } => self.leave(cx, room),
            Request::Say { room, text } => self.say(cx, room, text),
            Request::Nick { nick } => self.nick(cx, nick),
            Request::Refresh { token } => self.refresh(cx, &token),
        }
    }

    /// Joins the registry group first, then asks the owner: see the module docs for why.
    fn join(
        &mut self,
        cx: &mut ProtocolCx<'_>,
        room: String,
        nick: Option<String>,
        since: Option<u64>,
        epoch: Option<String>,
    ) -> Result<(), ChatError> {
        check_room(&room)?;
        if !may_join(cx.identity().map(|identity| &**identity), &room) {
            return Err(ChatError::Forbidden {
                room: Some(room),
                why: Forbidden::PrivateRoom,
            });
        }
        if let Some(identity) = cx.identity() {
            if nick.as_ref().is_some_and(|nick| *nick != identity.name) {
                return Err(ChatError::Forbidden {
                    room: Some(room),
                    why: Forbidden::Rename,
                });
            }
        }
        if let Some(nick) = &nick {
            self.limits.check_nick(nick)?;
        }
        if self.rooms.contains(&room) {
            return Err(ChatError::AlreadyInRoom(room));
        }
        if self.rooms.len() >= self.limits.max_rooms {
            return Err(ChatError::TooManyRooms {
                max: self.limits.max_rooms,
            });
        }
        let nick = nick
            .or_else(|| self.nick.clone())
            .ok_or(ChatError::NickRequired)?;
        // A different nick in a join renames the connection in its other rooms too.
        if self.nick.as_ref().is_some_and(|current| *current != nick) {
            self.tell(ToRooms::Nick {
                conn: self.conn,
                nick: nick.clone(),
            });
        }
        self.nick = Some(nick.clone());
        cx.join(&room);
        self.rooms.push(room.clone());
        self.tell(ToRooms::Join {
            conn: self.conn,
            room,
            nick,
            user: cx.identity().map(|identity| identity.sub.clone()),
            since,
            epoch,
            mailbox: cx.mailbox(),
        });
        Ok(())
    }

    fn leave(&mut self, cx: &mut ProtocolCx<'_>, room: String) -> Result<(), ChatError> {
        let Some(position) = self.rooms.iter().position(|joined| *joined == room) else {
            return Err(ChatError::NotInRoom(room));
        };
        self.rooms.swap_remove(position);
        cx.leave(&room);
        self.tell(ToRooms::Leave {
            conn: self.conn,
            room,
        });
        Ok(())
    }

    fn say(
        &mut self,
        cx: &mut ProtocolCx<'_>,
        room: String,
        text: String,
    ) -> Result<(), ChatError> {
        if !self.rooms.contains(&room) {
            return Err(ChatError::NotInRoom(room));
        }
        if cx.identity().is_some_and(|identity| !identity.publish) {
            return Err(ChatError::Forbidden {
                room: Some(room),
                why: Forbidden::Publish,
            });
        }
        self.limits.check_text(&text)?;
        self.tell(ToRooms::Say {
            conn: self.conn,
            room,
            text,
        });
        Ok(())
    }

    fn nick(&mut self, cx: &mut ProtocolCx<'_>, nick: String) -> Result<(), ChatError> {
        if cx.identity().is_some() {
            return Err(ChatError::Forbidden {
                room: None,
                why: Forbidden::Rename,
            });
        }
        self.limits.check_nick(&nick)?;
        self.nick = Some(nick.clone());
        self.tell(ToRooms::Nick {
            conn: self.conn,
            nick,
        });
        Ok(())
    }

    /// A newer token of the same user: the connection now lives (and may do) what it says.
    /// The nick stays the one the connection has in its rooms.
    fn refresh(&mut self, cx: &mut ProtocolCx<'_>, token: &str) -> Result<(), ChatError> {
        let (Some(tokens), Some(current)) = (&self.tokens, cx.identity()) else {
            return Err(ChatError::Forbidden {
                room: None,
                why: Forbidden::NoTokens,
            });
        };
        let renewed = tokens.verify(token)?;
        if renewed.sub != current.sub {
            return Err(ChatError::Forbidden {
                room: None,
                why: Forbidden::OtherUser,
            });
        }
        let exp = renewed.expires;
        cx.renew_identity(Arc::new(renewed));
        cx.send_text(Event::Refreshed { exp }.encode());
        Ok(())
    }
}

impl Protocol for Chat {
    /// The reply group: the owner's answers to this connection come through it, in order with
    /// the room events.
    fn on_open(&mut self, cx: &mut ProtocolCx<'_>) {
        cx.join(&reply_room(self.conn));
    }

    fn on_message(&mut self, cx: &mut ProtocolCx<'_>, message: Message) {
        if let Err(error) = self.handle(cx, message) {
            cx.send_text(Event::error(&error));
        }
    }

    /// A join the owner could not do (cluster: broker unreachable): the connection is not in
    /// the room, and is told so.
    fn on_event(&mut self, cx: &mut ProtocolCx<'_>, event: Box<dyn std::any::Any + Send>) {
        let Ok(refused) = event.downcast::<JoinRefused>() else {
            return;
        };
        self.rooms.retain(|joined| *joined != refused.room);
        cx.leave(&refused.room);
        cx.send_text(Event::error(&refused.error));
    }

    fn on_expiring(&mut self, cx: &mut ProtocolCx<'_>, remaining: Duration) {
        let in_ms = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
        cx.send_text(Event::Expiring { in_ms }.encode());
    }

    /// Others in its rooms see it leave; the registry groups are left by the session.
    fn on_close(&mut self, _: &mut ProtocolCx<'_>) {
        if self.known_to_owner {
            self.owner.do_send(ToRooms::Gone { conn: self.conn });
        }
    }
}
