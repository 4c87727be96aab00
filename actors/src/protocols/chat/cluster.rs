//! Chat rooms across a cluster: the owner of this node's rooms keeps, for each room with
//! members here, a copy of the room fed by the cluster's chat log ([`ChatLog`]).
//!
//! The log stamps ids, keeps the history and the members, and publishes every event of a room
//! to the nodes watching it. This node delivers a room's messages to its members strictly in
//! id order: a message that arrives ahead of the next expected id is held, and the missing
//! ones are fetched from the log (a snapshot), so a broker outage leaves no silent gap. If the
//! log no longer keeps them (trimmed, or the broker lost its data and the room started a new
//! epoch), the members get a `history_lost` error naming the room and can rejoin.
//!
//! # Why a joiner sees `joined` before newer messages, with nothing missing between
//! The room is watched (subscribed) and its snapshot taken before any join is answered, and
//! every later message is applied to the copy in id order by this one actor. A join's answer is
//! computed from the copy when the log has added the member, and published to the joiner's
//! reply group from this same actor, after every message already applied and before every later
//! one. As on a single node, events published before the answer may reach the joiner first;
//! they are all contained in it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use actix::{ActorFutureExt, AsyncContext, Context, Handler, WrapFuture};
use bytestring::ByteString;

use super::{
    error::ChatError,
    room::{now_ms, Room},
    rooms::{publish_room, reply, ChatRooms, JoinRefused, ToRooms, ANNOUNCER},
    wire::Event,
};
use crate::{
    registry::broker::{
        node_id, ChatLog, ChatLogError, FeedEvent, LogMember, RoomFeed, RoomLog, Saying,
    },
    SessionId,
};

/// Longest wait for a joiner's own presence event before its `joined` is sent anyway.
const ANSWER_WAIT: Duration = Duration::from_secs(1);

/// This node's view of the cluster's chat rooms.
pub struct Cluster {
    log: Arc<dyn ChatLog>,
    history: usize,
    feeds: HashMap<String, Feed>,
    /// Joins being answered, by room and connection.
    answers: HashMap<(String, SessionId), Answer>,
    /// Messages waiting for the batch being sent to the log, with their senders.
    says: Vec<(Option<SessionId>, Saying)>,
    /// Whether a batch of messages is on its way to the log.
    saying: bool,
}

/// A join waiting for the log's members and for the joiner's presence event.
struct Answer {
    nick: String,
    since: Option<u64>,
    epoch: Option<String>,
    members: Option<Vec<String>>,
    announced: bool,
}

/// A room with members on this node.
struct Feed {
    state: FeedState,
    /// This node's members (and joiners not yet answered).
    local: HashSet<SessionId>,
    /// Messages that arrived ahead of the next id, by id: `(epoch, event)`.
    ahead: BTreeMap<u64, (String, ByteString)>,
    catching_up: bool,
}

enum FeedState {
    /// Waiting for the subscription and the snapshot; requests wait with it, in order.
    Starting(Vec<ToRooms>),
    Live(Room),
}

impl Cluster {
    pub fn new(log: Arc<dyn ChatLog>, history: usize) -> Cluster {
        Cluster {
            log,
            history,
            feeds: HashMap::new(),
            answers: HashMap::new(),
            says: Vec::new(),
            saying: false,
        }
    }

    /// The rooms with members here, for keeping them alive in the log.
    pub fn rooms(&self) -> Vec<String> {
        self.feeds.keys().cloned().collect()
    }

    /// This node's members of a room.
    pub fn local_members(&self, room: &str) -> usize {
        self.feeds.get(room).map_or(0, |feed| feed.local.len())
    }
}

fn unavailable(error: &ChatLogError) -> ChatError {
    log::debug!("chat log: {error}");
    ChatError::Unavailable
}

impl ChatRooms {
    fn cluster_mut(&mut self) -> &mut Cluster {
        self.cluster
            .as_mut()
            .expect("cluster requests only come with a cluster")
    }

    /// A request in cluster mode. Requests of a room that is still starting wait for it.
    pub(super) fn cluster_request(&mut self, request: ToRooms, ctx: &mut Context<ChatRooms>) {
        let room = match &request {
            ToRooms::Join { room, .. }
            | ToRooms::Say { room, .. }
            | ToRooms::Leave { room, .. } => room.clone(),
            ToRooms::Nick { conn, nick } => return self.cluster_nick(*conn, nick.clone()),
            ToRooms::Gone { conn } => return self.cluster_gone(*conn),
        };
        let recipient = ctx.address().recipient();
        if let ToRooms::Join {
            conn, nick, user, ..
        } = &request
        {
            self.remember(*conn, &room, nick, user.clone());
        }
        let cluster = self.cluster_mut();
        if let ToRooms::Join { conn, .. } = &request {
            let feed = cluster.feeds.entry(room.clone()).or_insert_with(|| {
                cluster.log.watch(&room, Some(recipient));
                Feed {
                    state: FeedState::Starting(Vec::new()),
                    local: HashSet::new(),
                    ahead: BTreeMap::new(),
                    catching_up: false,
                }
            });
            feed.local.insert(*conn);
        }
        let Some(feed) = cluster.feeds.get_mut(&room) else {
            // Not a member here (say/leave of a room never joined): nothing to do.
            return;
        };
        if let FeedState::Starting(waiting) = &mut feed.state {
            waiting.push(request);
            return;
        }
        match request {
            ToRooms::Join {
                conn,
                room,
                nick,
                user,
                since,
                epoch,
                mailbox,
            } => {
                // Gone or left while the room was starting: nothing to join.
                if !self
                    .conns
                    .get(&conn)
                    .is_some_and(|entry| entry.rooms.contains(&room))
                {
                    return;
                }
                let joining = self
                    .cluster_mut()
                    .log
                    .join(&room, conn, &nick, user.as_deref());
                let answer = Answer {
                    nick,
                    since,
                    epoch,
                    members: None,
                    announced: false,
                };
                self.cluster_mut()
                    .answers
                    .insert((room.clone(), conn), answer);
                ctx.spawn(joining.into_actor(self).map(move |members, rooms, ctx| {
                    match members {
                        Ok(members) => {
                            let key = (room, conn);
                            if let Some(answer) = rooms.cluster_mut().answers.get_mut(&key) {
                                answer.members = Some(members);
                            }
                            rooms.answer_join(&key);
                            // The joiner's own presence event normally comes right after; if
                            // it was lost on the way, the joiner is answered anyway.
                            ctx.run_later(ANSWER_WAIT, move |rooms, _| {
                                if let Some(answer) = rooms.cluster_mut().answers.get_mut(&key) {
                                    answer.announced = true;
                                }
                                rooms.answer_join(&key);
                            });
                        }
                        Err(error) => {
                            rooms.cluster_mut().answers.remove(&(room.clone(), conn));
                            rooms.forget_member(conn, &room);
                            mailbox.event(JoinRefused {
                                room,
                                error: unavailable(&error),
                            });
                        }
                    }
                }));
            }
            ToRooms::Say { conn, room, text } => {
                let Some(nick) = self.conns.get(&conn).map(|entry| entry.nick.clone()) else {
                    return;
                };
                if !self.cluster_mut().local_members_contains(&room, conn) {
                    return;
                }
                let saying = Saying {
                    room,
                    nick,
                    text,
                    ts: now_ms(),
                };
                self.queue_say(Some(conn), saying, ctx);
            }
            ToRooms::Leave { conn, room } => {
                self.forget_member(conn, &room);
                self.leave_in_log(&room, conn, ctx);
                reply(conn, Event::Left { room: &room }.encode());
            }
            ToRooms::Nick { .. } | ToRooms::Gone { .. } => unreachable!("handled above"),
        }
    }

    /// Answers a join once the log has added the member and this node has delivered the
    /// member's own presence event: `joined` then comes after it, as on a single node.
    fn answer_join(&mut self, key: &(String, SessionId)) {
        let cluster = self.cluster_mut();
        let ready = cluster
            .answers
            .get(key)
            .is_some_and(|answer| answer.announced && answer.members.is_some());
        if !ready {
            return;
        }
        let Some(answer) = cluster.answers.remove(key) else {
            return;
        };
        let (room, conn) = key;
        let Some(Feed {
            state: FeedState::Live(copy),
            ..
        }) = cluster.feeds.get(room)
        else {
            return;
        };
        let members = answer.members.unwrap_or_default();
        let members = members.iter().map(String::as_str).collect();
        reply(
            *conn,
            copy.joined_with(
                room,
                &answer.nick,
                members,
                answer.since,
                answer.epoch.as_deref(),
            ),
        );
    }

    fn remember(&mut self, conn: SessionId, room: &str, nick: &str, user: Option<Arc<str>>) {
        let entry = self
            .conns
            .entry(conn)
            .or_insert_with(|| super::rooms::Conn {
                nick: nick.to_owned(),
                user,
                rooms: Vec::new(),
            });
        nick.clone_into(&mut entry.nick);
        if !entry.rooms.iter().any(|joined| joined == room) {
            entry.rooms.push(room.to_owned());
        }
    }

    /// The connection is no longer a member here; a room without members here is unwatched.
    fn forget_member(&mut self, conn: SessionId, room: &str) {
        if let Some(entry) = self.conns.get_mut(&conn) {
            entry.rooms.retain(|joined| joined != room);
        }
        if let Some(feed) = self.cluster_mut().feeds.get_mut(room) {
            feed.local.remove(&conn);
        }
        self.drop_if_unused(room);
    }

    /// A live room without members here is no longer watched (a starting one is checked again
    /// when it starts).
    fn drop_if_unused(&mut self, room: &str) {
        let cluster = self.cluster_mut();
        let unused = cluster
            .feeds
            .get(room)
            .is_some_and(|feed| feed.local.is_empty() && matches!(feed.state, FeedState::Live(_)));
        if unused {
            cluster.feeds.remove(room);
            cluster.log.watch(room, None);
        }
    }

    fn leave_in_log(&mut self, room: &str, conn: SessionId, ctx: &mut Context<ChatRooms>) {
        let leaving = self.cluster_mut().log.leave(room, conn);
        // A leave the log missed (broker down) is repaired by the resync after the outage.
        ctx.spawn(leaving.into_actor(self).map(|_, _, _| ()));
    }

    fn cluster_nick(&mut self, conn: SessionId, nick: String) {
        let entry = self
            .conns
            .entry(conn)
            .or_insert_with(|| super::rooms::Conn {
                nick: nick.clone(),
                user: None,
                rooms: Vec::new(),
            });
        let old = std::mem::replace(&mut entry.nick, nick.clone());
        let rooms = entry.rooms.clone();
        if old != nick {
            let log = self.cluster_mut().log.clone();
            for room in &rooms {
                let renaming = log.rename(room, conn, &old, &nick);
                actix::spawn(async move {
                    let _ = renaming.await;
                });
            }
        }
        reply(
            conn,
            Event::Nick {
                room: None,
                old: &old,
                new: &nick,
            }
            .encode(),
        );
    }

    fn cluster_gone(&mut self, conn: SessionId) {
        let Some(entry) = self.conns.remove(&conn) else {
            return;
        };
        let log = self.cluster_mut().log.clone();
        for room in &entry.rooms {
            let leaving = log.leave(room, conn);
            actix::spawn(async move {
                let _ = leaving.await;
            });
            if let Some(feed) = self.cluster_mut().feeds.get_mut(room) {
                feed.local.remove(&conn);
            }
            self.drop_if_unused(room);
        }
    }

    /// A message published from outside (`POST /api/publish`): said in the log by
    /// [`ANNOUNCER`]; resolves to this node's members of the room.
    pub(super) fn cluster_announce(
        &mut self,
        room: &str,
        text: &str,
        ctx: &mut Context<ChatRooms>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = usize> + Send>> {
        let reached = self.cluster_mut().local_members(room);
        let saying = Saying {
            room: room.to_owned(),
            nick: ANNOUNCER.to_owned(),
            text: text.to_owned(),
            ts: now_ms(),
        };
        self.queue_say(None, saying, ctx);
        Box::pin(std::future::ready(reached))
    }

    /// Messages go to the log in the order they were said: one batch at a time, each batch
    /// every message queued meanwhile, in one pipeline. So a sender's messages get increasing
    /// ids, and batches grow with the load. A failed batch is refused to each of its senders
    /// (`unavailable`); announcements (no sender) are logged.
    fn queue_say(
        &mut self,
        sender: Option<SessionId>,
        saying: Saying,
        ctx: &mut Context<ChatRooms>,
    ) {
        let cluster = self.cluster_mut();
        cluster.says.push((sender, saying));
        if !cluster.saying {
            self.send_says(ctx);
        }
    }

    fn send_says(&mut self, ctx: &mut Context<ChatRooms>) {
        let cluster = self.cluster_mut();
        let batch = std::mem::take(&mut cluster.says);
        cluster.saying = !batch.is_empty();
        if batch.is_empty() {
            return;
        }
        let (senders, messages): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let rooms: Vec<String> = messages.iter().map(|m| m.room.clone()).collect();
        let said = cluster.log.say(messages);
        ctx.spawn(said.into_actor(self).map(move |said, chat, ctx| {
            if let Err(error) = said {
                for (sender, room) in senders.into_iter().zip(rooms) {
                    match sender {
                        Some(conn) => reply(conn, Event::error(&unavailable(&error))),
                        None => log::warn!("publish to chat room {room}: {error}"),
                    }
                }
            }
            chat.send_says(ctx);
        }));
    }

    /// A room's snapshot is in: the copy starts (or catches up) from it.
    fn apply_snapshot(&mut self, room: &str, log: RoomLog, ctx: &mut Context<ChatRooms>) {
        let history = self.cluster_mut().history;
        let Some(feed) = self.cluster_mut().feeds.get_mut(room) else {
            return;
        };
        feed.catching_up = false;
        let waiting = match &mut feed.state {
            FeedState::Starting(waiting) => {
                let waiting = std::mem::take(waiting);
                feed.state =
                    FeedState::Live(Room::restore(history, log.epoch, log.last_id, log.kept));
                waiting
            }
            FeedState::Live(copy) => {
                if copy.epoch() != log.epoch {
                    publish_room(room, Event::error(&ChatError::HistoryLost(room.to_owned())));
                    *copy = Room::restore(history, log.epoch, log.last_id, log.kept);
                } else {
                    for (id, event) in log.kept {
                        if id <= copy.last_id() {
                            continue;
                        }
                        if id != copy.last_id() + 1 {
                            publish_room(
                                room,
                                Event::error(&ChatError::HistoryLost(room.to_owned())),
                            );
                        }
                        copy.append(id, event.clone());
                        publish_room(room, event);
                    }
                    if log.last_id > copy.last_id() {
                        // Nothing kept (--history 0) or trimmed past what was missed.
                        publish_room(room, Event::error(&ChatError::HistoryLost(room.to_owned())));
                        let (epoch, kept) = (copy.epoch().to_owned(), Vec::new());
                        *copy = Room::restore(history, epoch, log.last_id, kept);
                    }
                }
                Vec::new()
            }
        };
        // The snapshot is the log as it is: held messages of another epoch are gone for good.
        if let FeedState::Live(copy) = &feed.state {
            let epoch = copy.epoch();
            feed.ahead.retain(|_, (held, _)| held == epoch);
        }
        self.apply_ahead(room, ctx);
        for request in waiting {
            self.cluster_request(request, ctx);
        }
        self.drop_if_unused(room);
    }

    /// Delivers the held messages that are now next in line; a gap left asks for a catch-up.
    fn apply_ahead(&mut self, room: &str, ctx: &mut Context<ChatRooms>) {
        let Some(feed) = self.cluster_mut().feeds.get_mut(room) else {
            return;
        };
        let FeedState::Live(copy) = &mut feed.state else {
            return;
        };
        while let Some(entry) = feed.ahead.first_entry() {
            let id = *entry.key();
            let (epoch, _) = entry.get();
            if epoch != copy.epoch() || id <= copy.last_id() {
                if epoch == copy.epoch() {
                    entry.remove();
                    continue;
                }
                // Another epoch: only a snapshot can tell what happened.
                break;
            }
            if id != copy.last_id() + 1 {
                break;
            }
            let (_, event) = entry.remove();
            copy.append(id, event.clone());
            publish_room(room, event);
        }
        if !feed.ahead.is_empty() {
            self.catch_up(room, ctx);
        }
    }

    fn catch_up(&mut self, room: &str, ctx: &mut Context<ChatRooms>) {
        let cluster = self.cluster_mut();
        let Some(feed) = cluster.feeds.get_mut(room) else {
            return;
        };
        if feed.catching_up {
            return;
        }
        feed.catching_up = true;
        let snapshot = cluster.log.snapshot(room);
        let room = room.to_owned();
        ctx.spawn(
            snapshot
                .into_actor(self)
                .map(move |log, rooms, ctx| match log {
                    Ok(log) => rooms.apply_snapshot(&room, log, ctx),
                    Err(error) => {
                        log::warn!("chat room {room}: cannot read the log: {error}");
                        rooms.snapshot_failed(&room);
                    }
                }),
        );
    }

    /// The snapshot failed: a room still starting refuses its joiners (they may try again);
    /// a live one waits for the next chance (the broker's return) to catch up.
    fn snapshot_failed(&mut self, room: &str) {
        let cluster = self.cluster_mut();
        let Some(feed) = cluster.feeds.get_mut(room) else {
            return;
        };
        feed.catching_up = false;
        if let FeedState::Starting(waiting) = &mut feed.state {
            let waiting = std::mem::take(waiting);
            cluster.feeds.remove(room);
            cluster.log.watch(room, None);
            for request in waiting {
                match request {
                    ToRooms::Join {
                        conn,
                        room,
                        mailbox,
                        ..
                    } => {
                        if let Some(entry) = self.conns.get_mut(&conn) {
                            entry.rooms.retain(|joined| *joined != room);
                        }
                        mailbox.event(JoinRefused {
                            room,
                            error: ChatError::Unavailable,
                        });
                    }
                    ToRooms::Say { conn, .. } => {
                        reply(conn, Event::error(&ChatError::Unavailable));
                    }
                    ToRooms::Leave { conn, room } => {
                        reply(conn, Event::Left { room: &room }.encode());
                    }
                    ToRooms::Nick { .. } | ToRooms::Gone { .. } => {}
                }
            }
        }
    }

    /// One event of a room from the log.
    fn feed_event(&mut self, room: &str, payload: &[u8], ctx: &mut Context<ChatRooms>) {
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        match text.split_at_checked(1) {
            Some(("m", rest)) => {
                let mut parts = rest.splitn(3, ' ');
                let (Some(id), Some(epoch), Some(event)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return;
                };
                let Ok(id) = id.parse::<u64>() else {
                    return;
                };
                let Some(feed) = self.cluster_mut().feeds.get_mut(room) else {
                    return;
                };
                feed.ahead
                    .insert(id, (epoch.to_owned(), ByteString::from(event.to_owned())));
                if matches!(feed.state, FeedState::Live(_)) {
                    self.apply_ahead(room, ctx);
                }
            }
            Some(("j", rest)) => {
                // A join: `j<member> <event>`; a joiner of this node is answered after it. No
                // event: the joiner's user was in the room already.
                let Some((member, event)) = rest.split_once(' ') else {
                    return;
                };
                let live = matches!(
                    self.cluster_mut().feeds.get(room),
                    Some(Feed {
                        state: FeedState::Live(_),
                        ..
                    })
                );
                if live && !event.is_empty() {
                    publish_room(room, ByteString::from(event.to_owned()));
                }
                let own = member
                    .strip_prefix(node_id())
                    .and_then(|rest| rest.strip_prefix('/'))
                    .and_then(|conn| conn.parse::<SessionId>().ok());
                if let Some(conn) = own {
                    let key = (room.to_owned(), conn);
                    if let Some(answer) = self.cluster_mut().answers.get_mut(&key) {
                        answer.announced = true;
                    }
                    self.answer_join(&key);
                }
            }
            Some(("e", event)) => {
                if let Some(Feed {
                    state: FeedState::Live(_),
                    ..
                }) = self.cluster_mut().feeds.get(room)
                {
                    publish_room(room, ByteString::from(event.to_owned()));
                }
            }
            _ => {}
        }
    }

    /// After an outage the log may hold members of this node that left meanwhile, or have lost
    /// them (a restarted broker): make it hold exactly this node's members.
    fn resync(&mut self, ctx: &mut Context<ChatRooms>) {
        let members = self
            .conns
            .iter()
            .flat_map(|(conn, entry)| {
                entry.rooms.iter().map(|room| LogMember {
                    room: room.clone(),
                    conn: *conn,
                    nick: entry.nick.clone(),
                    user: entry.user.clone(),
                })
            })
            .collect();
        let resyncing = self.cluster_mut().log.resync(members);
        ctx.spawn(resyncing.into_actor(self).map(|done, _, _| {
            if let Err(error) = done {
                log::warn!("chat: cannot resync this node's members: {error}");
            }
        }));
    }

    /// Keeps the log's rooms with members here alive.
    pub(super) fn keep_rooms(&mut self, ctx: &mut Context<ChatRooms>) {
        let cluster = self.cluster_mut();
        if cluster.feeds.is_empty() {
            return;
        }
        let keeping = cluster.log.keep(cluster.rooms());
        ctx.spawn(keeping.into_actor(self).map(|_, _, _| ()));
    }
}

impl Cluster {
    fn local_members_contains(&self, room: &str, conn: SessionId) -> bool {
        self.feeds
            .get(room)
            .is_some_and(|feed| feed.local.contains(&conn))
    }
}

impl Handler<RoomFeed> for ChatRooms {
    type Result = ();

    fn handle(&mut self, feed: RoomFeed, ctx: &mut Context<Self>) {
        if self.cluster.is_none() {
            return;
        }
        match feed.event {
            FeedEvent::Watching { .. } => self.catch_up(&feed.room, ctx),
            FeedEvent::Event(payload) => self.feed_event(&feed.room, &payload, ctx),
            FeedEvent::Reconnected => self.resync(ctx),
        }
    }
}
