//! One room's state: its members, its message ids and its recent history. Only the owner of
//! all rooms ([`super::rooms::ChatRooms`]) touches it, so ids are stamped in one place.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use bytestring::ByteString;
use indexmap::IndexMap;

use super::wire::{self, Event};
use crate::SessionId;

/// A message as stored and sent: its id and its `message` event, serialized once.
struct Stored {
    id: u64,
    event: ByteString,
}

/// A room: ids count up from 1 within an `epoch`; a new epoch starts with each new room (at
/// server start every room is new), so an `(epoch, id)` pair names one message for good.
pub struct Room {
    epoch: String,
    last_id: u64,
    history: VecDeque<Stored>,
    capacity: usize,
    /// The members, in the order they joined.
    members: IndexMap<MemberKey, Member>,
    empty_since: Option<Instant>,
}

/// Who a member is: a user (every connection of one token `sub`: one member in presence), or a
/// connection without a token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MemberKey {
    Conn(SessionId),
    User(Arc<str>),
}

impl MemberKey {
    pub fn of(conn: SessionId, user: Option<&Arc<str>>) -> MemberKey {
        match user {
            Some(sub) => MemberKey::User(sub.clone()),
            None => MemberKey::Conn(conn),
        }
    }
}

/// A member's nick and its connections in the room (more than one only for a user).
struct Member {
    nick: String,
    conns: Vec<SessionId>,
}

/// What a rejoining client gets: whether it recovered, and the messages to send it.
pub struct Recovery<'a> {
    pub recovered: bool,
    pub history: Vec<&'a str>,
}

impl Room {
    /// A new room keeping the last `capacity` messages (`--history`).
    pub fn new(capacity: usize, now: Instant) -> Room {
        Room {
            epoch: crate::registry::broker::new_epoch(),
            last_id: 0,
            history: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            members: IndexMap::new(),
            empty_since: Some(now),
        }
    }

    /// A node's copy of a room whose log is kept in the cluster's broker: its epoch, last id
    /// and kept messages as the log has them. Members are the log's, not kept here.
    pub fn restore(
        capacity: usize,
        epoch: String,
        last_id: u64,
        kept: Vec<(u64, ByteString)>,
    ) -> Room {
        let mut room = Room {
            epoch,
            last_id,
            history: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            members: IndexMap::new(),
            empty_since: None,
        };
        for (id, event) in kept {
            room.keep(id, event);
        }
        room.last_id = last_id;
        room
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Records a message stamped elsewhere (by the cluster's log) as the room's latest.
    pub fn append(&mut self, id: u64, event: ByteString) {
        self.keep(id, event);
        self.last_id = id;
    }

    fn keep(&mut self, id: u64, event: ByteString) {
        if self.capacity == 0 {
            return;
        }
        if self.history.len() == self.capacity {
            self.history.pop_front();
        }
        self.history.push_back(Stored { id, event });
    }

    /// Adds a connection to the room; returns whether that made a new member (a user's second
    /// connection does not).
    pub fn add_member(&mut self, key: MemberKey, conn: SessionId, nick: &str) -> bool {
        self.empty_since = None;
        match self.members.entry(key) {
            indexmap::map::Entry::Occupied(mut member) => {
                let conns = &mut member.get_mut().conns;
                if !conns.contains(&conn) {
                    conns.push(conn);
                }
                false
            }
            indexmap::map::Entry::Vacant(slot) => {
                slot.insert(Member {
                    nick: nick.to_owned(),
                    conns: vec![conn],
                });
                true
            }
        }
    }

    /// Removes a connection from the room; returns the member's nick if the member is gone
    /// with it (a user leaves with its last connection).
    pub fn remove_member(
        &mut self,
        key: &MemberKey,
        conn: SessionId,
        now: Instant,
    ) -> Option<String> {
        let member = self.members.get_mut(key)?;
        member.conns.retain(|other| *other != conn);
        if !member.conns.is_empty() {
            return None;
        }
        let member = self.members.shift_remove(key)?;
        if self.members.is_empty() {
            self.empty_since = Some(now);
        }
        Some(member.nick)
    }

    pub fn rename_member(&mut self, key: &MemberKey, nick: &str) {
        if let Some(member) = self.members.get_mut(key) {
            nick.clone_into(&mut member.nick);
        }
    }

    pub fn is_member(&self, key: &MemberKey, conn: SessionId) -> bool {
        self.members
            .get(key)
            .is_some_and(|member| member.conns.contains(&conn))
    }

    pub fn members(&self) -> Vec<&str> {
        self.members
            .values()
            .map(|member| member.nick.as_str())
            .collect()
    }

    /// Since when the room has had no members (`None`: it has some).
    pub fn empty_since(&self) -> Option<Instant> {
        self.empty_since
    }

    /// Stamps a message with the next id, keeps it in the history and returns its event.
    pub fn say(&mut self, room: &str, nick: &str, text: &str, ts: u64) -> ByteString {
        self.last_id += 1;
        let event = Event::Message {
            room,
            id: self.last_id,
            epoch: &self.epoch,
            ts,
            nick,
            text,
        }
        .encode();
        self.keep(self.last_id, event.clone());
        event
    }

    /// The messages after `since` if they are all still here and `epoch` is this room's;
    /// otherwise (or without `since`) everything kept, with `recovered: false`.
    pub fn recover(&self, since: Option<u64>, epoch: Option<&str>) -> Recovery<'_> {
        let first_kept = self.history.front().map_or(self.last_id + 1, |m| m.id);
        let recovered = match since {
            Some(since) => {
                epoch == Some(self.epoch.as_str())
                    && since <= self.last_id
                    && since >= first_kept - 1
            }
            None => false,
        };
        let after = if recovered { since.unwrap_or(0) } else { 0 };
        Recovery {
            recovered,
            history: self
                .history
                .iter()
                .filter(|stored| stored.id > after)
                .map(|stored| &*stored.event)
                .collect(),
        }
    }

    /// The answer to a join: the room now (members, last id) and what the joiner missed.
    pub fn joined(
        &self,
        room: &str,
        nick: &str,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> ByteString {
        self.joined_with(room, nick, self.members(), since, epoch)
    }

    /// [`Room::joined`] with the members given (those of the whole cluster).
    pub fn joined_with(
        &self,
        room: &str,
        nick: &str,
        members: Vec<&str>,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> ByteString {
        let recovery = self.recover(since, epoch);
        Event::Joined {
            room,
            epoch: &self.epoch,
            nick,
            members,
            last_id: self.last_id,
            recovered: recovery.recovered,
            history: recovery.history.into_iter().map(wire::raw).collect(),
        }
        .encode()
    }
}

/// Milliseconds since the Unix epoch (the `ts` of messages).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(recovery: &Recovery<'_>) -> Vec<u64> {
        recovery
            .history
            .iter()
            .map(|text| {
                serde_json::from_str::<serde_json::Value>(text).unwrap()["id"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    fn room_with(capacity: usize, messages: u64) -> Room {
        let mut room = Room::new(capacity, Instant::now());
        for n in 0..messages {
            room.say("r", "ann", &n.to_string(), 0);
        }
        room
    }

    #[test]
    fn ids_count_up_and_history_keeps_the_last_ones() {
        let room = room_with(3, 5);
        assert_eq!(room.last_id(), 5);
        assert_eq!(ids(&room.recover(None, None)), [3, 4, 5]);
    }

    #[test]
    fn recovery_gives_exactly_the_missed_messages() {
        let room = room_with(3, 5);
        let epoch = Some(room.epoch());
        let recovery = room.recover(Some(3), epoch);
        assert!(recovery.recovered);
        assert_eq!(ids(&recovery), [4, 5]);
        // The oldest kept message is 3, so a client that saw 2 misses nothing.
        let recovery = room.recover(Some(2), epoch);
        assert!(recovery.recovered);
        assert_eq!(ids(&recovery), [3, 4, 5]);
        let recovery = room.recover(Some(5), epoch);
        assert!(recovery.recovered);
        assert!(recovery.history.is_empty());
    }

    #[test]
    fn recovery_fails_outside_the_window_or_epoch() {
        let room = room_with(3, 5);
        let epoch = Some(room.epoch());
        // Message 2 was dropped from the history: what is kept comes with recovered: false.
        let recovery = room.recover(Some(1), epoch);
        assert!(!recovery.recovered);
        assert_eq!(ids(&recovery), [3, 4, 5]);
        assert!(!room.recover(Some(3), Some("another epoch")).recovered);
        assert!(!room.recover(Some(3), None).recovered);
        assert!(!room.recover(Some(6), epoch).recovered);
        assert!(!room.recover(None, epoch).recovered);
    }

    #[test]
    fn without_history_only_an_up_to_date_client_recovers() {
        let room = room_with(0, 4);
        let epoch = Some(room.epoch());
        assert!(room.recover(Some(4), epoch).recovered);
        assert!(!room.recover(Some(3), epoch).recovered);
        let fresh = room_with(0, 0);
        assert!(fresh.recover(Some(0), Some(fresh.epoch())).recovered);
    }

    #[test]
    fn a_restored_room_recovers_like_the_original() {
        let original = room_with(3, 5);
        let kept = original
            .history
            .iter()
            .map(|stored| (stored.id, stored.event.clone()))
            .collect();
        let mut copy = Room::restore(3, original.epoch().to_owned(), 5, kept);
        let recovery = copy.recover(Some(3), Some(original.epoch()));
        assert!(recovery.recovered);
        assert_eq!(ids(&recovery), [4, 5]);
        let mut original = original;
        let next = original.say("r", "ann", "six", 0);
        copy.append(6, next);
        assert_eq!(copy.last_id(), 6);
        assert_eq!(ids(&copy.recover(None, None)), [4, 5, 6]);
        assert!(!copy.recover(Some(2), Some(original.epoch())).recovered);
    }

    #[test]
    fn new_rooms_get_new_epochs() {
        assert_ne!(room_with(1, 0).epoch(), room_with(1, 0).epoch());
    }

    #[test]
    fn members_keep_join_order_and_empty_rooms_are_dated() {
        let now = Instant::now();
        let mut room = Room::new(1, now);
        let key = MemberKey::Conn;
        assert!(room.add_member(key(1), 1, "ann"));
        assert!(room.add_member(key(2), 2, "bob"));
        assert!(room.add_member(key(3), 3, "cy"));
        assert_eq!(room.remove_member(&key(1), 1, now).as_deref(), Some("ann"));
        room.rename_member(&key(3), "cyd");
        assert_eq!(room.members(), ["bob", "cyd"]);
        assert_eq!(room.empty_since(), None);
        room.remove_member(&key(2), 2, now);
        room.remove_member(&key(3), 3, now);
        assert_eq!(room.empty_since(), Some(now));
        assert_eq!(room.remove_member(&key(3), 3, now), None);
    }

    #[test]
    fn a_user_is_one_member_until_its_last_connection_leaves() {
        let now = Instant::now();
        let mut room = Room::new(1, now);
        let ann = MemberKey::User("u-ann".into());
        assert!(room.add_member(ann.clone(), 1, "Ann"));
        assert!(room.add_member(MemberKey::Conn(2), 2, "bob"));
        assert!(!room.add_member(ann.clone(), 3, "Ann"));
        assert_eq!(room.members(), ["Ann", "bob"]);
        assert!(room.is_member(&ann, 3));
        assert_eq!(room.remove_member(&ann, 1, now), None);
        assert_eq!(room.members(), ["Ann", "bob"]);
        assert!(!room.is_member(&ann, 1));
        assert_eq!(room.remove_member(&ann, 3, now).as_deref(), Some("Ann"));
        assert_eq!(room.members(), ["bob"]);
    }
}
