//! A lean reader of server frames for the broadcast subscribers.
//!
//! At a million deliveries a second the subscribers are the load client's hot path, and the
//! client shares the machine with the server under test: every microsecond it spends per message
//! is taken from the server and shows up as latency. tungstenite's stream zero-fills its read
//! buffer before every read and allocates one message per frame; this reader keeps one buffer per
//! connection, reads into it without filling, and hands out frames as slices of it. Frame headers
//! are parsed by tungstenite's own `FrameHeader::parse`, so only the buffering is ours.
//!
//! Reading is cancel-safe (`read_buf` on a `TcpStream`), so a subscriber can wait for input and a
//! timer at once.

use std::io::Cursor;
use std::ops::Range;

use anyhow::{bail, Context, Result};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::MaybeTlsStream;

use crate::common::Ws;

/// Smallest free space offered to each read.
const READ_SPACE: usize = 16 * 1024;

/// One frame in the reader's buffer.
pub struct RawFrame {
    pub opcode: OpCode,
    /// Where the payload is, in [`FrameReader::payload`].
    range: Range<usize>,
    consumed: usize,
}

/// Reads a connection's frames from its socket (after the handshake).
pub struct FrameReader {
    /// Plain TCP, or TLS for a wss target (the frames are read after decryption).
    stream: MaybeTlsStream<TcpStream>,
    buffer: BytesMut,
    max_frame: usize,
}

impl FrameReader {
    /// Takes over a connection whose handshake is done and on which nothing has been read yet
    /// (the subscribers join before anything is published, so no frame can be left in the
    /// handshake's buffer; one would show up as a malformed record).
    pub fn new(ws: Ws, max_frame: usize) -> FrameReader {
        FrameReader {
            stream: ws.into_inner(),
            buffer: BytesMut::new(),
            max_frame,
        }
    }

    /// Waits for more bytes; returns how many arrived (0: the server closed the connection).
    pub async fn read_more(&mut self) -> Result<usize> {
        self.buffer.reserve(READ_SPACE);
        Ok(self.stream.read_buf(&mut self.buffer).await?)
    }

    /// The next whole frame in the buffer, if there is one. Call [`FrameReader::consume`] with
    /// it once its payload has been used.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame>> {
        let mut cursor = Cursor::new(&self.buffer[..]);
        let Some((header, len)) = FrameHeader::parse(&mut cursor)? else {
            return Ok(None);
        };
        if header.mask.is_some() {
            bail!("the server sent a masked frame");
        }
        let len = usize::try_from(len).context("frame length")?;
        if len > self.max_frame {
            bail!(
                "frame of {len} bytes, over the {} byte limit",
                self.max_frame
            );
        }
        let start = cursor.position() as usize;
        if self.buffer.len() < start + len {
            self.buffer.reserve(start + len - self.buffer.len());
            return Ok(None);
        }
        Ok(Some(RawFrame {
            opcode: header.opcode,
            range: start..start + len,
            consumed: start + len,
        }))
    }

    pub fn payload(&self, frame: &RawFrame) -> &[u8] {
        &self.buffer[frame.range.clone()]
    }

    pub fn consume(&mut self, frame: RawFrame) {
        self.buffer.advance(frame.consumed);
    }

    /// Answers a ping (client frames are masked, RFC 6455 §5.3).
    pub async fn pong(&mut self, payload: Vec<u8>) -> Result<()> {
        self.send(OpCode::Control(Control::Pong), payload).await
    }

    /// Sends a close frame with status 1000 and stops writing.
    pub async fn close(&mut self) -> Result<()> {
        self.send(
            OpCode::Control(Control::Close),
            1000u16.to_be_bytes().to_vec(),
        )
        .await?;
        self.stream.shutdown().await?;
        Ok(())
    }

    async fn send(&mut self, opcode: OpCode, payload: Vec<u8>) -> Result<()> {
        let header = FrameHeader {
            opcode,
            mask: Some(rand_mask()),
            ..FrameHeader::default()
        };
        let mut wire = Vec::with_capacity(payload.len() + 14);
        Frame::from_payload(header, payload.into()).format(&mut wire)?;
        self.stream.write_all(&wire).await?;
        Ok(())
    }
}

/// A masking key. It only has to be unpredictable to the network path (there is none here:
/// loopback), so the clock's low bits do.
fn rand_mask() -> [u8; 4] {
    (crate::common::now_ns() as u32).to_be_bytes()
}
