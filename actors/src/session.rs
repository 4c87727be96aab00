//! The Session actor: one per WebSocket connection, on its worker's thread.
//!
//! It turns decoded frames into whole messages (via the [`Assembler`]), answers control frames,
//! runs the close handshake, and hands messages to the connection's [`Protocol`]. Everything it
//! sends goes through its [`Outbox`]; its timers (ping, idle, close timeout) are kept by the
//! worker's shard, so they keep working while the socket is stuck and this actor cannot run.

use std::any::Any;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use actix_http::ws::Frame as WsFrame;

use actix::{Actor, ActorContext, AsyncContext, Handler, Message as ActixMessage, StreamHandler};

use crate::{
    assembler::Assembler,
    close::CloseError,
    inbound::Inbound,
    message::Message,
    metrics::METRICS,
    outbox::{AfterClose, Frame, Outbox},
    protocol::{ConnectionInfo, Link, Mailbox, Protocol, ProtocolCx, Scope, EXPIRY_NOTICE},
    registry,
    slots::SessionSlot,
    status_board,
    transport::{ProtocolError, SessionContext, WsMessage},
};

/// The longest single wait for a token's expiry.
const EXPIRY_RECHECK: Duration = Duration::from_secs(24 * 3600);

pub struct Session {
    protocol: Box<dyn Protocol>,
    link: Link,
    assembler: Assembler,
    /// Its place under `--max-connections`, given back when the session is dropped.
    _slot: Option<SessionSlot>,
    protocol_index: Option<usize>,
    /// The token expiry the protocol was last told about ([`Protocol::on_expiring`]).
    expiry_told: Option<u64>,
    /// The current chain of expiry timers; a renewal starts a new one and ends the old.
    expiry_watch: u64,
}

impl Session {
    /// A session for a connection whose handshake succeeded, on the current worker's shard.
    pub fn new(
        protocol: Box<dyn Protocol>,
        info: ConnectionInfo,
        outbox: Rc<Outbox>,
        max_message_size: usize,
        slot: Option<SessionSlot>,
    ) -> Session {
        let protocol_index = crate::protocols::position(info.protocol);
        let cluster = protocol_index
            .is_some_and(|index| crate::protocols::installed()[index].scope == Scope::Cluster);
        let identity = info.identity.clone();
        Session {
            _slot: slot,
            protocol_index,
            protocol,
            expiry_told: None,
            expiry_watch: 0,
            link: Link {
                identity,
                renewed: false,
                info: Rc::new(info),
                outbox,
                shard: registry::local_shard(),
                rooms: Vec::new(),
                mailbox: None,
                cluster,
            },
            assembler: Assembler::new(max_message_size),
        }
    }

    /// Fails the connection (RFC 6455 §7.1.7): send the close frame, then end the TCP connection.
    fn fail(&mut self, error: CloseError, ctx: &mut SessionContext) {
        log::debug!("closing connection {}: {error}", self.link.info.id);
        self.link.outbox.close(&error, AfterClose::End);
        ctx.stop();
    }

    fn deliver(&mut self, message: Message, ctx: &mut SessionContext) {
        METRICS.messages_in.inc();
        METRICS.bytes_in.add(message.len() as u64);
        let mut cx = ProtocolCx {
            link: &mut self.link,
        };
        self.protocol.on_message(&mut cx, message);
        self.after_renewal(ctx);
    }

    /// After a protocol callback: a renewed identity (a refresh) may expire earlier or later
    /// than the one watched, so its expiry is watched from now on instead.
    fn after_renewal(&mut self, ctx: &mut SessionContext) {
        if std::mem::take(&mut self.link.renewed) {
            self.expiry_watch += 1;
            self.watch_expiry(ctx, self.expiry_watch);
        }
    }

    /// Keeps the connection within its token's life: tells the protocol [`EXPIRY_NOTICE`]
    /// before `exp`, and closes with 4001 at `exp`. Each run looks at the identity as it is
    /// then, so a renewal (a refresh) simply moves the next run.
    fn watch_expiry(&mut self, ctx: &mut SessionContext, watch: u64) {
        if watch != self.expiry_watch {
            return;
        }
        let Some(identity) = self.link.identity.clone() else {
            return;
        };
        let (Some(exp), Some(expires_at)) = (identity.expires, identity.expires_at()) else {
            return;
        };
        if self.link.outbox.is_closing() {
            return;
        }
        let remaining = expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if remaining.is_zero() {
            log::debug!("closing connection {}: token expired", self.link.info.id);
            self.link
                .outbox
                .close(&CloseError::TokenExpired, AfterClose::AwaitPeer);
            return;
        }
        if remaining <= EXPIRY_NOTICE && self.expiry_told != Some(exp) {
            self.expiry_told = Some(exp);
            let mut cx = ProtocolCx {
                link: &mut self.link,
            };
            self.protocol.on_expiring(&mut cx, remaining);
        }
        let next = if self.expiry_told == Some(exp) {
            remaining
        } else {
            remaining - EXPIRY_NOTICE
        };
        // A far expiry is looked at again daily rather than with one timer years ahead.
        ctx.run_later(next.min(EXPIRY_RECHECK), move |session, ctx| {
            session.watch_expiry(ctx, watch)
        });
    }

    /// Answers the peer's close: echo its status code (or none), then end the connection. If we
    /// had sent a close first, this is its answer and the handshake is complete.
    fn answer_close(
        &mut self,
        reason: Option<actix_http::ws::CloseReason>,
        ctx: &mut SessionContext,
    ) {
        let status = reason.map(|reason| u16::from(reason.code));
        self.link
            .outbox
            .close_with(status.map(|code| (code, "")), AfterClose::End);
        ctx.stop();
    }
}

impl Actor for Session {
    type Context = SessionContext;

    fn started(&mut self, ctx: &mut SessionContext) {
        METRICS.sessions_open.inc();
        METRICS.sessions_opened.inc();
        if let Some(index) = self.protocol_index {
            METRICS.sessions_by_protocol[index].inc();
        }
        self.link.mailbox = Some(Mailbox {
            session: ctx.address(),
        });
        let link = &mut self.link;
        link.shard.register(link.info.id, &link.outbox);
        status_board::opened(&link.info);
        self.protocol.on_open(&mut ProtocolCx { link });
        self.watch_expiry(ctx, self.expiry_watch);
        if let Some(period) = self.protocol.tick_interval() {
            ctx.run_interval(period, |session, _| {
                if !session.link.outbox.is_closing() {
                    let mut cx = ProtocolCx {
                        link: &mut session.link,
                    };
                    session.protocol.on_tick(&mut cx);
                }
            });
        }
    }

    fn stopped(&mut self, _: &mut SessionContext) {
        self.protocol.on_close(&mut ProtocolCx {
            link: &mut self.link,
        });
        let link = &mut self.link;
        for room in link.rooms.drain(..) {
            link.shard.leave(&room, link.info.id);
        }
        link.shard.unregister(link.info.id);
        status_board::closed(link.info.id);
        METRICS.sessions_open.dec();
        if let Some(index) = self.protocol_index {
            METRICS.sessions_by_protocol[index].dec();
        }
    }
}

/// The connection's frames (see [`crate::inbound`]).
impl StreamHandler<Result<Inbound, ProtocolError>> for Session {
    fn handle(&mut self, item: Result<Inbound, ProtocolError>, ctx: &mut SessionContext) {
        self.link.outbox.heard_from_peer();
        let Inbound { frame, compressed } = match item {
            Ok(inbound) => inbound,
            Err(err) => {
                match CloseError::from_decoder(&err) {
                    Some(error) => self.fail(error, ctx),
                    None => ctx.stop(),
                }
                return;
            }
        };
        let message = match frame {
            WsFrame::Ping(payload) => {
                self.link.outbox.send(Frame::pong(payload));
                return;
            }
            WsFrame::Pong(_) => return,
            WsFrame::Close(reason) => return self.answer_close(reason, ctx),
            // After our close frame, data frames are read and discarded (RFC 6455 §1.4).
            _ if self.link.outbox.is_closing() => return,
            WsFrame::Text(text) => self.assembler.whole(true, compressed, text).map(Some),
            WsFrame::Binary(data) => self.assembler.whole(false, compressed, data).map(Some),
            WsFrame::Continuation(item) => self.assembler.push(item, compressed),
        };
        match message {
            Ok(Some(message)) => self.deliver(message, ctx),
            Ok(None) => {}
            Err(error) => self.fail(error, ctx),
        }
    }

    /// The peer's side of the TCP connection ended.
    fn finished(&mut self, ctx: &mut SessionContext) {
        ctx.stop();
    }
}

/// Required by actix-web-actors' context, whose own decoder is given an input that never yields
/// (the session reads [`Inbound`] frames instead): never called.
impl StreamHandler<Result<WsMessage, ProtocolError>> for Session {
    fn handle(&mut self, _: Result<WsMessage, ProtocolError>, _: &mut SessionContext) {}

    fn finished(&mut self, _: &mut SessionContext) {}
}

/// A message for this connection's peer, from another thread or actor ([`Mailbox::deliver`]).
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub(crate) struct Deliver(pub(crate) Message);

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, Deliver(message): Deliver, _: &mut SessionContext) {
        self.link.outbox.send(Frame::message(&message));
    }
}

/// An event for this connection's protocol ([`Mailbox::event`]).
#[derive(ActixMessage)]
#[rtype(result = "()")]
pub(crate) struct Event(pub(crate) Box<dyn Any + Send>);

impl Handler<Event> for Session {
    type Result = ();

    fn handle(&mut self, Event(event): Event, ctx: &mut SessionContext) {
        let mut cx = ProtocolCx {
            link: &mut self.link,
        };
        self.protocol.on_event(&mut cx, event);
        self.after_renewal(ctx);
    }
}
