//! permessage-deflate (RFC 7692): the negotiation in the handshake, the bounded inflater for what
//! peers send, and the compressor for what the server sends.
//!
//! The server keeps no compression state per connection. It answers every accepted offer with
//! `server_no_context_takeover` and `client_no_context_takeover`, so each message is compressed
//! on its own: one compressed payload fits every member of a room that negotiated compression
//! (a broadcast is compressed once, see [`compress::Deflated`]), and an inflater lives only while
//! one incoming message is being read ([`inflate::Inflater`]).

pub mod compress;
pub mod inflate;
pub mod negotiate;

pub use compress::Deflated;
pub use inflate::{InflateError, Inflater};
pub use negotiate::{negotiate, Agreement};

/// What a sync flush appends to a deflate stream, and what RFC 7692 §7.2.1 strips from the end
/// of each compressed message (and §7.2.2 appends again before inflating it).
pub(crate) const SYNC_TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// How the server compresses what it sends on a connection that negotiated permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// Messages shorter than this go out uncompressed (`--compress-min`).
    pub min_size: usize,
}
