//! Group keys: a room within a protocol.

use bytestring::ByteString;

/// A room of one protocol. Rooms of different protocols never mix, so a `chat` room named
/// "lobby" and a mirror instance named "lobby" are different groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    protocol: &'static str,
    room: ByteString,
}

impl GroupKey {
    pub fn new(protocol: &'static str, room: &str) -> GroupKey {
        GroupKey {
            protocol,
            room: ByteString::from(room),
        }
    }

    pub fn protocol(&self) -> &'static str {
        self.protocol
    }

    pub fn room(&self) -> &str {
        &self.room
    }
}
