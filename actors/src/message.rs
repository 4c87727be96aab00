//! Whole WebSocket messages as protocols see them.

use bytes::Bytes;
use bytestring::ByteString;

/// A whole data message. Payloads are reference-counted, so a message fanned out to many
/// connections is shared, never copied per recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Text(ByteString),
    Binary(Bytes),
}

impl Message {
    pub fn len(&self) -> usize {
        match self {
            Message::Text(text) => text.len(),
            Message::Binary(data) => data.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
