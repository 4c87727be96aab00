//! Compressing what the server sends: once per message, whatever the number of recipients.
//!
//! Without context takeover a compressed message depends on nothing but its own bytes, so the
//! first recipient that needs the compressed form computes it and every other one (on any
//! worker) reuses it: [`Deflated`] travels with the frame, shared by reference count like the
//! payload. The compressor itself is one per thread, reset for each message, so no connection
//! keeps deflate state.

use std::{
    cell::RefCell,
    sync::{Arc, OnceLock},
};

use bytes::Bytes;
use flate2::{Compress, FlushCompress, Status};

use super::SYNC_TRAILER;

/// zlib's default level: on short chat-like JSON it compresses about as well as the highest
/// levels, and the cost is paid once per broadcast, not per recipient.
const LEVEL: u32 = 6;

thread_local! {
    static COMPRESSOR: RefCell<Compress> =
        RefCell::new(Compress::new(flate2::Compression::new(LEVEL), false));
}

/// The compressed form of one message payload, computed at most once and shared by every copy
/// of the frame. `None` inside: compressing did not make it smaller.
#[derive(Debug, Clone, Default)]
pub struct Deflated(Arc<OnceLock<Option<Bytes>>>);

impl Deflated {
    /// The payload compressed (computed on first use), or `None` if that does not shrink it.
    pub fn get_or_compress(&self, payload: &[u8]) -> Option<Bytes> {
        self.0.get_or_init(|| compress(payload)).clone()
    }

    /// Whether some copy of the frame has already computed the compressed form.
    pub fn is_computed(&self) -> bool {
        self.0.get().is_some()
    }
}

/// Compresses one whole message as RFC 7692 §7.2.1 says (a raw deflate stream flushed with a
/// sync flush, its trailing `00 00 ff ff` removed). `None` if the result is not smaller.
pub fn compress(payload: &[u8]) -> Option<Bytes> {
    COMPRESSOR.with_borrow_mut(|raw| {
        raw.reset();
        // Room for the payload and the trailer: a result any longer is of no use.
        let mut out = Vec::with_capacity(payload.len() + SYNC_TRAILER.len());
        let status = raw
            .compress_vec(payload, &mut out, FlushCompress::Sync)
            .ok()?;
        let complete = raw.total_in() == payload.len() as u64
            && status == Status::Ok
            && out.len() < out.capacity()
            && out.ends_with(&SYNC_TRAILER);
        if !complete {
            return None;
        }
        out.truncate(out.len() - SYNC_TRAILER.len());
        (out.len() < payload.len()).then(|| Bytes::from(out))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shrinks_and_random_bytes_do_not() {
        let json = r#"{"type":"message","room":"lobby","nick":"alice","text":"hello everyone, how is it going today?"}"#.repeat(10);
        let compressed = compress(json.as_bytes()).unwrap();
        assert!(compressed.len() * 3 < json.len(), "{}", compressed.len());

        let mut state = 0x1234_5678u32;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        assert_eq!(compress(&noise), None);
    }

    #[test]
    fn each_message_stands_alone() {
        // Compressing another message first must not change the output (no context kept).
        let first = compress(&[b'a'; 1000]).unwrap();
        compress(&[b'b'; 3000]);
        assert_eq!(compress(&[b'a'; 1000]).unwrap(), first);
    }

    #[test]
    fn the_shared_form_is_computed_once() {
        let deflated = Deflated::default();
        let copy = deflated.clone();
        assert!(!copy.is_computed());
        let first = deflated.get_or_compress(&[b'x'; 500]).unwrap();
        assert!(copy.is_computed());
        // The copy gets the same bytes (the same allocation), not a second compression.
        let second = copy.get_or_compress(b"ignored: already computed").unwrap();
        assert_eq!(first.as_ptr(), second.as_ptr());
    }
}
