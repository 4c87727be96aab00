//! Group keys: a room within a protocol.

use bytestring::ByteString;

/// A room of one protocol. Rooms of different protocols never mix, so a `chat` room named
/// "lobby" and a mirror instance named "lobby" are different groups. A group of a
/// cluster-scoped protocol has members on every node of a cluster (see [`super::broker`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupKey {
    protocol: &'static str,
    room: ByteString,
    cluster: bool,
}

impl GroupKey {
    /// A group of this node only.
    pub fn new(protocol: &'static str, room: &str) -> GroupKey {
        GroupKey::scoped(protocol, room, false)
    }

    /// A group of this node (`cluster: false`) or of the whole cluster.
    pub fn scoped(protocol: &'static str, room: &str, cluster: bool) -> GroupKey {
        GroupKey {
            protocol,
            room: ByteString::from(room),
            cluster,
        }
    }

    pub fn protocol(&self) -> &'static str {
        self.protocol
    }

    pub fn room(&self) -> &str {
        &self.room
    }

    /// Whether the group spans the cluster (its broadcasts go through the broker).
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }
}
