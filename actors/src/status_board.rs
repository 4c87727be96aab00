//! The list of live connections, for the `lws-status` protocol.
//!
//! One actor, on its own thread, owns the list: sessions on every worker tell it when they open
//! and close (one message each, off the message path). When the list changes it publishes a new
//! JSON document to the `lws-status` subscribers, at most once per [`PUBLISH_PERIOD`], so a burst
//! of connections costs one document, not one per connection.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::{Duration, UNIX_EPOCH},
};

use actix::{Actor, Addr, Arbiter, AsyncContext, Context, Handler, Message as ActixMessage};
use bytestring::ByteString;
use serde::Serialize;

use crate::{
    message::Message,
    outbox::Frame,
    protocol::{ConnectionInfo, Mailbox},
    registry::{publish, GroupKey},
    SessionId,
};

/// The shortest time between two published documents.
pub const PUBLISH_PERIOD: Duration = Duration::from_millis(250);

/// At most this many connections are listed (the count is always exact).
const MAX_LISTED: usize = 1000;

/// The protocol (and so the group) whose members receive the documents.
pub const STATUS_PROTOCOL: &str = "lws-status";

/// One live connection, kept compact (one is kept for every connection of the server).
#[derive(Debug, Clone)]
struct Listed {
    peer: Option<SocketAddr>,
    protocol: &'static str,
    ua: Arc<str>,
    /// Connected since, in seconds since the Unix epoch.
    since: u64,
}

/// One listed connection, in the field names libwebsockets' test page reads.
#[derive(Serialize)]
struct ListedView<'a> {
    peer: String,
    protocol: &'static str,
    ua: &'a str,
    /// Seconds since the Unix epoch, as a string (as libwebsockets sends it).
    time: String,
}

impl Listed {
    fn view(&self) -> ListedView<'_> {
        ListedView {
            peer: self.peer.map(|peer| peer.to_string()).unwrap_or_default(),
            protocol: self.protocol,
            ua: &self.ua,
            time: self.since.to_string(),
        }
    }
}

#[derive(Serialize)]
struct Document<'a> {
    version: &'static str,
    hostname: String,
    wss_over_h2: &'static str,
    total: usize,
    conns: Vec<ListedView<'a>>,
}

/// The owner of the list of live connections.
pub struct StatusBoard {
    connections: BTreeMap<SessionId, Listed>,
    /// Open `lws-status` connections: documents are built only when someone reads them.
    subscribers: usize,
    changed: bool,
    hostname: String,
}

static BOARD: OnceLock<(Arbiter, Addr<StatusBoard>)> = OnceLock::new();

fn board() -> &'static Addr<StatusBoard> {
    &BOARD
        .get_or_init(|| {
            let arbiter = Arbiter::new();
            let addr = StatusBoard::start_in_arbiter(&arbiter.handle(), |_| StatusBoard {
                connections: BTreeMap::new(),
                subscribers: 0,
                changed: false,
                hostname: hostname(),
            });
            (arbiter, addr)
        })
        .1
}

/// Records a newly opened connection.
pub fn opened(info: &ConnectionInfo) {
    let since = info
        .connected_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    board().do_send(Opened {
        id: info.id,
        listed: Listed {
            peer: info.peer,
            protocol: info.protocol,
            ua: info.user_agent.clone(),
            since,
        },
    });
}

/// Records that a connection has closed.
pub fn closed(id: SessionId) {
    board().do_send(Closed(id));
}

/// Sends the current document to one new subscriber right away.
pub fn subscribe(mailbox: Mailbox) {
    board().do_send(Subscribe(mailbox));
}

/// A subscriber has gone.
pub fn unsubscribe() {
    board().do_send(Unsubscribe);
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

impl StatusBoard {
    fn document(&self) -> Message {
        let document = Document {
            version: concat!("switchboard ", env!("CARGO_PKG_VERSION")),
            hostname: self.hostname.clone(),
            wss_over_h2: "0",
            total: self.connections.len(),
            conns: self
                .connections
                .values()
                .take(MAX_LISTED)
                .map(Listed::view)
                .collect(),
        };
        let json = serde_json::to_string(&document).expect("the document always serializes");
        Message::Text(ByteString::from(json))
    }
}

impl Actor for StatusBoard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(PUBLISH_PERIOD, |board, _| {
            if board.changed && board.subscribers > 0 {
                board.changed = false;
                let key = GroupKey::new(STATUS_PROTOCOL, "");
                publish(&key, Frame::message(&board.document()));
            }
        });
    }
}

#[derive(ActixMessage)]
#[rtype(result = "()")]
struct Opened {
    id: SessionId,
    listed: Listed,
}

#[derive(ActixMessage)]
#[rtype(result = "()")]
struct Closed(SessionId);

#[derive(ActixMessage)]
#[rtype(result = "()")]
struct Subscribe(Mailbox);

#[derive(ActixMessage)]
#[rtype(result = "()")]
struct Unsubscribe;

impl Handler<Unsubscribe> for StatusBoard {
    type Result = ();

    fn handle(&mut self, _: Unsubscribe, _: &mut Context<Self>) {
        self.subscribers = self.subscribers.saturating_sub(1);
    }
}

impl Handler<Opened> for StatusBoard {
    type Result = ();

    fn handle(&mut self, opened: Opened, _: &mut Context<Self>) {
        self.connections.insert(opened.id, opened.listed);
        self.changed = true;
    }
}

impl Handler<Closed> for StatusBoard {
    type Result = ();

    fn handle(&mut self, Closed(id): Closed, _: &mut Context<Self>) {
        self.changed |= self.connections.remove(&id).is_some();
    }
}

impl Handler<Subscribe> for StatusBoard {
    type Result = ();

    fn handle(&mut self, Subscribe(mailbox): Subscribe, _: &mut Context<Self>) {
        self.subscribers += 1;
        mailbox.deliver(self.document());
    }
}
