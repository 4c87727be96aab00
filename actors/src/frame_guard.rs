//! A guard on a WebSocket connection's input that refuses an over-long frame from its header.
//!
//! actix-http's frame decoder checks a frame's size only once the whole frame has arrived, and
//! buffers it until then. A peer declaring a frame of many gigabytes could make the server buffer
//! without bound. This guard reads just the frame headers as bytes pass through (it copies and
//! buffers nothing) and fails the input as soon as a header declares more than the limit. The
//! session maps that failure to close code 1009.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use actix_http::error::PayloadError;
use bytes::Bytes;
use futures_util::Stream;

/// Where the guard is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Inside a frame header: its bytes so far.
    Header { seen: usize },
    /// Inside a payload: bytes left.
    Payload { left: u64 },
}

/// Wraps a connection's input; passes every chunk through unchanged.
pub struct FrameGuard<S> {
    input: S,
    max_frame: u64,
    position: Position,
    header: [u8; 14],
    tripped: bool,
}

impl<S> FrameGuard<S> {
    pub fn new(input: S, max_frame: usize) -> FrameGuard<S> {
        FrameGuard {
            input,
            max_frame: max_frame as u64,
            position: Position::Header { seen: 0 },
            header: [0; 14],
            tripped: false,
        }
    }

    /// Follows the frame boundaries through `chunk`; false if a frame is over the limit.
    fn scan(&mut self, mut chunk: &[u8]) -> bool {
        while !chunk.is_empty() {
            match self.position {
                Position::Payload { left } => {
                    let skip = left.min(chunk.len() as u64);
                    chunk = &chunk[skip as usize..];
                    self.position = if skip == left {
                        Position::Header { seen: 0 }
                    } else {
                        Position::Payload { left: left - skip }
                    };
                }
                Position::Header { mut seen } => {
                    self.header[seen] = chunk[0];
                    seen += 1;
                    chunk = &chunk[1..];
                    self.position = Position::Header { seen };
                    if seen < 2 || seen < header_len(&self.header) {
                        continue;
                    }
                    let length = payload_len(&self.header);
                    if length > self.max_frame {
                        return false;
                    }
                    self.position = if length == 0 {
                        Position::Header { seen: 0 }
                    } else {
                        Position::Payload { left: length }
                    };
                }
            }
        }
        true
    }
}

/// Length of a client frame header (always masked, but a missing mask bit is the decoder's
/// error to report, so it is honoured here).
fn header_len(header: &[u8; 14]) -> usize {
    let extended = match header[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if header[1] & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

fn payload_len(header: &[u8; 14]) -> u64 {
    match header[1] & 0x7f {
        126 => u16::from_be_bytes([header[2], header[3]]) as u64,
        127 => u64::from_be_bytes(header[2..10].try_into().expect("eight bytes")),
        short => short as u64,
    }
}

impl<S> Stream for FrameGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.tripped {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.input).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if self.scan(&chunk) {
                    Poll::Ready(Some(Ok(chunk)))
                } else {
                    self.tripped = true;
                    Poll::Ready(Some(Err(PayloadError::Overflow)))
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked_header(len: u64) -> Vec<u8> {
        let mut header = vec![0x82];
        match len {
            0..=125 => header.push(0x80 | len as u8),
            126..=65535 => {
                header.push(0x80 | 126);
                header.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                header.push(0x80 | 127);
                header.extend_from_slice(&len.to_be_bytes());
            }
        }
        header.extend_from_slice(&[1, 2, 3, 4]);
        header
    }

    fn guard() -> FrameGuard<futures_util::stream::Empty<Result<Bytes, PayloadError>>> {
        FrameGuard::new(futures_util::stream::empty(), 1000)
    }

    #[test]
    fn frames_within_the_limit_pass_byte_by_byte() {
        let mut guard = guard();
        let mut stream = Vec::new();
        for len in [0u64, 5, 125, 126, 1000] {
            stream.extend(masked_header(len));
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for byte in stream.chunks(1) {
            assert!(guard.scan(byte));
        }
        assert_eq!(guard.position, Position::Header { seen: 0 });
    }

    #[test]
    fn an_over_long_frame_is_refused_at_its_header() {
        let mut guard = guard();
        assert!(guard.scan(&masked_header(10)));
        assert!(guard.scan(&[0; 10]));
        assert!(!guard.scan(&masked_header(1 << 40)));
    }

    #[test]
    fn a_header_split_across_chunks_is_followed() {
        let mut guard = guard();
        let header = masked_header(70_000);
        assert!(guard.scan(&header[..3]));
        assert!(!guard.scan(&header[3..]));
    }
}
