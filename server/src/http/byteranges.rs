//! The `multipart/byteranges` body (RFC 7233 Appendix A) laid out as segments, so its exact
//! length is known before a byte of the file is read.
//!
//! ```text
//! --BOUNDARY\r\n
//! Content-Type: text/plain; charset=utf-8\r\n
//! Content-Range: bytes 0-49/1000\r\n
//! \r\n
//! <50 bytes>\r\n
//! --BOUNDARY\r\n
//! ...
//! <bytes>\r\n
//! --BOUNDARY--\r\n
//! ```

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
};

use bytes::Bytes;

use super::{file_body::Segment, ranges::ByteRange};

/// A multipart/byteranges body: its boundary and its segments.
pub struct Multipart {
    /// The boundary between parts (without the leading `--`).
    pub boundary: String,
    /// The body, in order: framing and file ranges.
    pub segments: Vec<Segment>,
}

impl Multipart {
    /// Lays out `parts` of a file of `total` bytes whose own type is `content_type`.
    pub fn new(parts: &[ByteRange], total: u64, content_type: &str) -> Multipart {
        let boundary = new_boundary();
        let mut segments = Vec::with_capacity(parts.len() * 2 + 1);
        for (i, part) in parts.iter().enumerate() {
            let separator = if i == 0 { "" } else { "\r\n" };
            let head = format!(
                "{separator}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
                part.content_range(total)
            );
            segments.push(Segment::Literal(Bytes::from(head)));
            segments.push(Segment::File {
                offset: part.start,
                len: part.len(),
            });
        }
        segments.push(Segment::Literal(Bytes::from(format!(
            "\r\n--{boundary}--\r\n"
        ))));
        Multipart { boundary, segments }
    }

    /// The response's `Content-Type`.
    pub fn content_type(&self) -> String {
        format!("multipart/byteranges; boundary={}", self.boundary)
    }
}

/// A boundary unlikely to occur in any file: 128 random bits. `RandomState` is std's source of
/// per-process random keys; hashing nothing with two fresh ones gives two random words.
fn new_boundary() -> String {
    let word = || RandomState::new().build_hasher().finish();
    format!("sb-{:016x}{:016x}", word(), word())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::file_body::total_len;

    #[test]
    fn layout_and_length() {
        let parts = [
            ByteRange { start: 0, end: 10 },
            ByteRange { start: 20, end: 25 },
        ];
        let multipart = Multipart::new(&parts, 100, "text/plain");
        let b = &multipart.boundary;
        let expected_framing = format!(
            "--{b}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-9/100\r\n\r\n\
             \r\n--{b}\r\nContent-Type: text/plain\r\nContent-Range: bytes 20-24/100\r\n\r\n\
             \r\n--{b}--\r\n"
        );
        assert_eq!(
            total_len(&multipart.segments),
            expected_framing.len() as u64 + 15
        );
        assert_ne!(new_boundary(), new_boundary());
    }
}
