//! A connection's identity, from the claims of its token, and the room rules that follow.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Rooms whose name starts with this can be joined only with a matching `rooms` claim.
pub const PRIVATE_PREFIX: &str = "private:";

/// Who a connection is, as its token says. Shared (`Arc`) by the session and its protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id (`sub`): two connections with the same one are the same user.
    pub sub: Arc<str>,
    /// The display name (`name`, else `sub`): the chat nick.
    pub name: String,
    /// Room names, or patterns ending in `*`, the user may join beyond the public rooms.
    pub rooms: Vec<String>,
    /// Whether the user may send to rooms (`publish`, default true).
    pub publish: bool,
    /// Whether the token may be used on `POST /api/publish` (`publish_api`, default false).
    pub publish_api: bool,
    /// When the token stops being valid (`exp`, seconds since the Unix epoch).
    pub expires: Option<u64>,
}

impl Identity {
    /// Whether this user may join `room`: every public room, and the `private:` rooms its
    /// `rooms` claim names.
    pub fn may_join(&self, room: &str) -> bool {
        !room.starts_with(PRIVATE_PREFIX) || self.rooms.iter().any(|entry| matches(entry, room))
    }

    /// The instant the token expires, if it does.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires
            .map(|seconds| UNIX_EPOCH + Duration::from_secs(seconds))
    }
}

/// Whether a connection (with this identity, or none when tokens are off) may join `room`.
/// Without tokens there are no identities and no private rooms.
pub fn may_join(identity: Option<&Identity>, room: &str) -> bool {
    identity.is_none_or(|identity| identity.may_join(room))
}

/// A `rooms` entry: a name, or a prefix followed by `*`.
fn matches(entry: &str, room: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => entry == room,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_rooms(rooms: &[&str]) -> Identity {
        Identity {
            sub: "u1".into(),
            name: "Ann".into(),
            rooms: rooms.iter().map(|room| room.to_string()).collect(),
            publish: true,
            publish_api: false,
            expires: None,
        }
    }

    #[test]
    fn public_rooms_are_open_private_ones_need_a_claim() {
        let ann = with_rooms(&["private:team", "private:ops-*"]);
        assert!(ann.may_join("lobby"));
        assert!(ann.may_join("private:team"));
        assert!(!ann.may_join("private:team2"));
        assert!(ann.may_join("private:ops-eu"));
        assert!(ann.may_join("private:ops-"));
        assert!(!ann.may_join("private:op"));
        assert!(!with_rooms(&[]).may_join("private:team"));
        assert!(with_rooms(&["private:*"]).may_join("private:anything"));
    }

    #[test]
    fn without_tokens_every_room_is_open() {
        assert!(may_join(None, "private:team"));
        assert!(!may_join(Some(&with_rooms(&[])), "private:team"));
    }
}
