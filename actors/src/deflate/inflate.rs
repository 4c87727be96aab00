//! Inflating one incoming compressed message, bounded by `--max-message-size`.
//!
//! A small compressed message can stand for a huge one (64 MiB of zeros deflate to about
//! 64 KiB). The output is produced in steps of at most [`STEP`] bytes and the limit is checked
//! after each, so a message that inflates past the limit fails when its output reaches the
//! limit, not after it has been held in full.
//!
//! Every message gets a fresh inflater (the server asks for `client_no_context_takeover`), so a
//! back-reference that points before the message's first byte is corrupt data. flate2 runs on
//! its zlib backend (zlib-rs) because zlib checks that ("invalid distance too far back"); the
//! miniz backend reads such a reference out of its zeroed window and yields NUL bytes instead of
//! an error.

use bytes::BytesMut;
use flate2::{Decompress, FlushDecompress, Status};

use super::SYNC_TRAILER;

/// Most output produced (and allocated) at once.
const STEP: usize = 16 * 1024;

/// Why an incoming compressed message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("message inflates past the size limit")]
    TooBig,
    #[error("invalid compressed data: {0}")]
    Corrupt(String),
}

/// The inflater of one message (no context takeover: a new one for every message).
pub struct Inflater {
    raw: Decompress,
    limit: usize,
    ended: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("limit", &self.limit)
            .field("in", &self.raw.total_in())
            .field("out", &self.raw.total_out())
            .finish()
    }
}

impl Inflater {
    /// An inflater whose whole output may be at most `limit` bytes.
    pub fn new(limit: usize) -> Inflater {
        Inflater {
            raw: Decompress::new(false),
            limit,
            ended: false,
        }
    }

    /// Inflates one whole compressed message (one frame's payload).
    pub fn inflate_message(limit: usize, compressed: &[u8]) -> Result<BytesMut, InflateError> {
        let mut inflater = Inflater::new(limit);
        let mut out = BytesMut::new();
        inflater.push(compressed, &mut out)?;
        inflater.finish(&mut out)?;
        Ok(out)
    }

    /// Inflates a fragment of the message, appending its output to `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut BytesMut) -> Result<(), InflateError> {
        while !input.is_empty() && !self.ended {
            // One byte past the limit is enough to know the message is too big.
            let room = STEP.min(self.limit + 1 - out.len());
            let start = out.len();
            out.resize(start + room, 0);
            let (before_in, before_out) = (self.raw.total_in(), self.raw.total_out());
            let status = self
                .raw
                .decompress(input, &mut out[start..], FlushDecompress::None);
            let consumed = (self.raw.total_in() - before_in) as usize;
            let produced = (self.raw.total_out() - before_out) as usize;
            out.truncate(start + produced);
            let status = status.map_err(|err| InflateError::Corrupt(err.to_string()))?;
            if out.len() > self.limit {
                return Err(InflateError::TooBig);
            }
            input = &input[consumed..];
            match status {
                // A final block ends the stream; whatever follows it is ignored.
                Status::StreamEnd => self.ended = true,
                Status::Ok | Status::BufError if consumed == 0 && produced == 0 => {
                    return Err(InflateError::Corrupt("no progress".into()))
                }
                Status::Ok | Status::BufError => {}
            }
        }
        Ok(())
    }

    /// Ends the message: inflates the trailer the sender stripped (RFC 7692 §7.2.2), which
    /// flushes what the inflater still holds.
    pub fn finish(&mut self, out: &mut BytesMut) -> Result<(), InflateError> {
        self.push(&SYNC_TRAILER, out)?;
        // Output still held back (the trailer's flush may need one more step).
        while !self.ended {
            let room = STEP.min(self.limit + 1 - out.len());
            let start = out.len();
            out.resize(start + room, 0);
            let before_out = self.raw.total_out();
            let status = self
                .raw
                .decompress(&[], &mut out[start..], FlushDecompress::Sync);
            let produced = (self.raw.total_out() - before_out) as usize;
            out.truncate(start + produced);
            let status = status.map_err(|err| InflateError::Corrupt(err.to_string()))?;
            if out.len() > self.limit {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                self.ended = true;
            }
            if produced == 0 {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::compress::compress;

    fn deflate_raw(data: &[u8]) -> Vec<u8> {
        let mut raw = flate2::Compress::new(flate2::Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        raw.compress_vec(data, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&SYNC_TRAILER));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn round_trips_what_the_compressor_makes() {
        let text = "hello hello hello hello hello hello hello hello hello hello".repeat(20);
        let compressed = compress(text.as_bytes()).expect("repetitive text shrinks");
        let out = Inflater::inflate_message(1 << 20, &compressed).unwrap();
        assert_eq!(&out[..], text.as_bytes());
    }

    #[test]
    fn the_rfc_example_inflates() {
        // RFC 7692 §7.2.3.1: "Hello" compressed, trailer stripped.
        let out =
            Inflater::inflate_message(100, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap();
        assert_eq!(&out[..], b"Hello");
        // §7.2.3.3: a final (BFINAL) block.
        let out =
            Inflater::inflate_message(100, &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap();
        assert_eq!(&out[..], b"Hello");
    }

    #[test]
    fn fragments_inflate_to_the_whole() {
        let data: Vec<u8> = (0..200_000u32).map(|n| (n % 251) as u8).collect();
        let compressed = deflate_raw(&data);
        let mut inflater = Inflater::new(1 << 20);
        let mut out = BytesMut::new();
        for piece in compressed.chunks(1000) {
            inflater.push(piece, &mut out).unwrap();
        }
        inflater.finish(&mut out).unwrap();
        assert_eq!(&out[..], &data[..]);
    }

    #[test]
    fn a_zip_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 64 << 20];
        let compressed = deflate_raw(&zeros);
        assert!(compressed.len() < 100_000, "{}", compressed.len());
        let mut inflater = Inflater::new(1 << 20);
        let mut out = BytesMut::new();
        assert_eq!(
            inflater.push(&compressed, &mut out),
            Err(InflateError::TooBig)
        );
        assert!(out.capacity() <= 2 << 20, "grew to {}", out.capacity());
    }

    #[test]
    fn exactly_the_limit_is_allowed() {
        let data = vec![7u8; 5000];
        let compressed = deflate_raw(&data);
        assert_eq!(
            Inflater::inflate_message(5000, &compressed).map(|out| out.len()),
            Ok(5000)
        );
        assert_eq!(
            Inflater::inflate_message(4999, &compressed),
            Err(InflateError::TooBig)
        );
    }

    #[test]
    fn garbage_is_corrupt() {
        assert!(matches!(
            Inflater::inflate_message(1000, &[0xff, 0xff, 0xff, 0xff, 0x00]),
            Err(InflateError::Corrupt(_))
        ));
    }

    #[test]
    fn a_reference_before_the_message_is_corrupt() {
        // Two messages compressed with one context: the second refers back into the first.
        let text = b"a sentence long enough to be referred to later on, twice over".repeat(4);
        let mut raw = flate2::Compress::new(flate2::Compression::default(), false);
        let mut first = Vec::with_capacity(1024);
        raw.compress_vec(&text, &mut first, flate2::FlushCompress::Sync)
            .unwrap();
        let mut second = Vec::with_capacity(1024);
        raw.compress_vec(&text, &mut second, flate2::FlushCompress::Sync)
            .unwrap();
        second.truncate(second.len() - 4);
        assert!(matches!(
            Inflater::inflate_message(1 << 20, &second),
            Err(InflateError::Corrupt(_))
        ));
    }
}
