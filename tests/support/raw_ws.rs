//! A raw-frame WebSocket client: the HTTP upgrade written by hand, then frames with any FIN, RSV,
//! opcode, mask and length the test asks for, and the server's frames parsed bit by bit (close
//! code and reason included). It is how the tests send what no WebSocket library would send,
//! and see exactly what the server wrote, down to the end of the TCP stream.

use std::{
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpSocket, TcpStream,
    },
    time::timeout,
};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The key of RFC 6455 §1.3 and the accept value the server must answer with.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The masking key the client uses unless a frame says otherwise.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

// ---------------------------------------------------------------------------------------------
// HTTP

/// An HTTP response: status, headers, and the body when it has a Content-Length.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A WebSocket handshake request for `path`; `extra` headers are added (a header given with an
/// empty value removes the default one of that name).
pub fn upgrade_request(method: &str, path: &str, extra: &[(&str, &str)]) -> String {
    let defaults = [
        ("Host", "localhost"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", SAMPLE_KEY),
        ("Sec-WebSocket-Version", "13"),
    ];
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in defaults {
        if !extra.iter().any(|(key, _)| key.eq_ignore_ascii_case(name)) {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    for (name, value) in extra {
        if !value.is_empty() {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    request.push_str("\r\n");
    request
}

/// Sends one HTTP request on a new connection and reads the response head (and the body, if it
/// has a Content-Length and is not a 101). Returns the response and the connection, with any
/// bytes read past the response.
pub async fn http_exchange(
    addr: SocketAddr,
    request: &str,
) -> io::Result<(HttpResponse, TcpStream, Vec<u8>)> {
    let stream = TcpStream::connect(addr).await?;
    http_exchange_on(stream, request.as_bytes()).await
}

async fn http_exchange_on(
    mut stream: TcpStream,
    request: &[u8],
) -> io::Result<(HttpResponse, TcpStream, Vec<u8>)> {
    stream.set_nodelay(true)?;
    stream.write_all(request).await?;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            break pos + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection ended inside the response head: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("status line {status_line:?}"),
            )
        })?;
    let headers: Vec<(String, String)> = lines
        .filter(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let mut rest = buf[head_end..].to_vec();
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if status != 101 {
        if let Some(len) = response
            .header("content-length")
            .and_then(|len| len.parse::<usize>().ok())
        {
            while rest.len() < len {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                rest.extend_from_slice(&chunk[..n]);
            }
            let tail = rest.split_off(len.min(rest.len()));
            response.body = std::mem::replace(&mut rest, tail);
        }
    }
    Ok((response, stream, rest))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

// ---------------------------------------------------------------------------------------------
// Frames

/// A frame to send, every bit chosen by the test.
#[derive(Debug, Clone)]
pub struct OutFrame {
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits.
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload: Vec<u8>,
}

impl OutFrame {
    /// A final, masked frame.
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> OutFrame {
        OutFrame {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(MASK),
            payload: payload.into(),
        }
    }

    pub fn text(text: impl Into<Vec<u8>>) -> OutFrame {
        OutFrame::new(OP_TEXT, text)
    }

    pub fn binary(data: impl Into<Vec<u8>>) -> OutFrame {
        OutFrame::new(OP_BINARY, data)
    }

    pub fn continuation(data: impl Into<Vec<u8>>) -> OutFrame {
        OutFrame::new(OP_CONTINUATION, data)
    }

    pub fn ping(data: impl Into<Vec<u8>>) -> OutFrame {
        OutFrame::new(OP_PING, data)
    }

    pub fn pong(data: impl Into<Vec<u8>>) -> OutFrame {
        OutFrame::new(OP_PONG, data)
    }

    /// A close frame with a status code and reason.
    pub fn close(code: u16, reason: &str) -> OutFrame {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        OutFrame::new(OP_CLOSE, payload)
    }

    pub fn fin(mut self, fin: bool) -> OutFrame {
        self.fin = fin;
        self
    }

    pub fn rsv(mut self, rsv: u8) -> OutFrame {
        self.rsv = rsv & 0b111;
        self
    }

    pub fn unmasked(mut self) -> OutFrame {
        self.mask = None;
        self
    }

    /// The frame's header alone, for a payload of `len` bytes written separately (masked with
    /// `self.mask`).
    pub fn header(&self, len: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(14);
        out.push(((self.fin as u8) << 7) | (self.rsv << 4) | (self.opcode & 0x0f));
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        match len {
            0..=125 => out.push(mask_bit | len as u8),
            126..=65535 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        if let Some(mask) = self.mask {
            out.extend_from_slice(&mask);
        }
        out
    }

    /// The frame on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.header(self.payload.len() as u64);
        let start = out.len();
        out.extend_from_slice(&self.payload);
        if let Some(mask) = self.mask {
            apply_mask(&mut out[start..], mask, 0);
        }
        out
    }
}

/// XORs `data` with the mask, `offset` being the position of `data[0]` in the payload.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= mask[(offset + i) % 4];
    }
}

/// A frame the server sent, as it was on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFrame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl InFrame {
    pub fn is_close(&self) -> bool {
        self.opcode == OP_CLOSE
    }

    /// The status code of a close frame (None: no payload).
    pub fn close_code(&self) -> Option<u16> {
        (self.is_close() && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The reason of a close frame.
    pub fn close_reason(&self) -> String {
        String::from_utf8_lossy(self.payload.get(2..).unwrap_or_default()).into_owned()
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).expect("frame payload is UTF-8")
    }

    /// A short description for failure messages (payloads abbreviated).
    pub fn describe(&self) -> String {
        let payload = if self.payload.len() > 40 {
            format!(
                "{:?}... ({} bytes)",
                String::from_utf8_lossy(&self.payload[..40]),
                self.payload.len()
            )
        } else {
            format!("{:?}", String::from_utf8_lossy(&self.payload))
        };
        format!(
            "frame(fin={}, rsv={}, opcode={:#x}, masked={}, payload={payload})",
            self.fin, self.rsv, self.opcode, self.masked
        )
    }
}

/// How a connection's byte stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// An orderly end (FIN).
    Eof,
    /// An error such as a reset.
    Error(io::ErrorKind),
}

// ---------------------------------------------------------------------------------------------
// The client

/// The read side: buffers bytes and parses whole frames.
pub struct FrameReader {
    half: OwnedReadHalf,
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    pos: usize,
}

impl FrameReader {
    /// Reads the next whole frame. `Ok(None)`: the stream ended cleanly between frames.
    /// Cancellation-safe: a read abandoned by a timeout can be resumed by calling it again.
    pub async fn read_frame(&mut self) -> io::Result<Option<InFrame>> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(Some(frame));
            }
            if !self.fill().await? {
                return if self.pos == self.buf.len() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "stream ended inside a frame ({} bytes pending)",
                            self.buf.len() - self.pos
                        ),
                    ))
                };
            }
        }
    }

    /// The next frame within `limit`; panics on a timeout, an error, or the end of the stream.
    pub async fn recv(&mut self, limit: Duration) -> InFrame {
        match timeout(limit, self.read_frame()).await {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => panic!("connection ended while waiting for a frame"),
            Ok(Err(err)) => panic!("error while waiting for a frame: {err}"),
            Err(_) => panic!("no frame within {limit:?}"),
        }
    }

    /// Reads raw bytes until the stream ends; panics if it has not ended within `limit`.
    /// Returns the bytes read (including any already buffered) and how the stream ended.
    pub async fn read_to_end(&mut self, limit: Duration) -> (Vec<u8>, StreamEnd) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut rest = self.buf.split_off(self.pos);
        self.buf.clear();
        self.pos = 0;
        loop {
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.half.read(&mut chunk)).await {
                Err(_) => panic!(
                    "the connection did not end within {limit:?} ({} bytes read meanwhile)",
                    rest.len()
                ),
                Ok(Ok(0)) => return (rest, StreamEnd::Eof),
                Ok(Ok(n)) => rest.extend_from_slice(&chunk[..n]),
                Ok(Err(err)) => return (rest, StreamEnd::Error(err.kind())),
            }
        }
    }

    /// Reads and discards bytes until the stream ends (or `limit` passes: then `None`).
    /// Returns the number of bytes read and how the stream ended.
    pub async fn drain_to_end(&mut self, limit: Duration) -> Option<(u64, StreamEnd)> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut count = (self.buf.len() - self.pos) as u64;
        self.buf.clear();
        self.pos = 0;
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.half.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) => return Some((count, StreamEnd::Eof)),
                Ok(Ok(n)) => count += n as u64,
                Ok(Err(err)) => return Some((count, StreamEnd::Error(err.kind()))),
            }
        }
    }

    /// Reads more bytes; false at the end of the stream.
    async fn fill(&mut self) -> io::Result<bool> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 1 << 20 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        // `read_buf` only appends what was read, so a read cancelled by a timeout loses nothing.
        self.buf.reserve(64 * 1024);
        let n = self.half.read_buf(&mut self.buf).await?;
        Ok(n > 0)
    }

    fn parse(&mut self) -> io::Result<Option<InFrame>> {
        let data = &self.buf[self.pos..];
        if data.len() < 2 {
            return Ok(None);
        }
        let masked = data[1] & 0x80 != 0;
        let (len, mut idx) = match data[1] & 0x7f {
            126 if data.len() < 4 => return Ok(None),
            126 => (u16::from_be_bytes([data[2], data[3]]) as u64, 4),
            127 if data.len() < 10 => return Ok(None),
            127 => (u64::from_be_bytes(data[2..10].try_into().unwrap()), 10),
            len => (len as u64, 2),
        };
        let mask = if masked {
            if data.len() < idx + 4 {
                return Ok(None);
            }
            idx += 4;
            Some(<[u8; 4]>::try_from(&data[idx - 4..idx]).unwrap())
        } else {
            None
        };
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "frame length overflow"))?;
        if data.len() < idx + len {
            self.buf.reserve(idx + len - data.len());
            return Ok(None);
        }
        let mut payload = data[idx..idx + len].to_vec();
        if let Some(mask) = mask {
            apply_mask(&mut payload, mask, 0);
        }
        let frame = InFrame {
            fin: data[0] & 0x80 != 0,
            rsv: (data[0] >> 4) & 0b111,
            opcode: data[0] & 0x0f,
            masked,
            payload,
        };
        self.pos += idx + len;
        Ok(Some(frame))
    }
}

/// The write side.
pub struct FrameWriter {
    half: OwnedWriteHalf,
}

impl FrameWriter {
    pub async fn send(&mut self, frame: &OutFrame) -> io::Result<()> {
        self.half.write_all(&frame.encode()).await
    }

    /// Writes bytes as they are (a frame built by hand, or part of one).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.half.write_all(bytes).await
    }

    /// Sends a frame whose payload is `len` bytes of `pattern` repeated, streamed in chunks so
    /// that large frames are never built whole in memory.
    pub async fn send_large(
        &mut self,
        frame: &OutFrame,
        len: u64,
        pattern: &[u8],
    ) -> io::Result<()> {
        self.half.write_all(&frame.header(len)).await?;
        let chunk_len = 256 * 1024;
        let mut chunk: Vec<u8> = pattern.iter().copied().cycle().take(chunk_len).collect();
        // Keep the pattern aligned across chunks (chunk_len is a multiple of the mask length).
        assert_eq!(
            chunk_len % pattern.len().max(1),
            0,
            "pattern must divide 256 KiB"
        );
        if let Some(mask) = frame.mask {
            apply_mask(&mut chunk, mask, 0);
        }
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk_len as u64) as usize;
            self.half.write_all(&chunk[..n]).await?;
            left -= n as u64;
        }
        Ok(())
    }

    /// Half-closes the connection (sends FIN).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.half.shutdown().await
    }
}

/// A WebSocket connection driven frame by frame.
pub struct RawWs {
    pub reader: FrameReader,
    pub writer: FrameWriter,
    /// The server's 101 response.
    pub response: HttpResponse,
}

impl RawWs {
    /// Upgrades `path` (no subprotocol offered); panics unless the server answers 101.
    pub async fn connect(addr: SocketAddr, path: &str) -> RawWs {
        RawWs::connect_with(addr, path, &[]).await
    }

    /// Upgrades with extra request headers; panics unless the server answers 101.
    pub async fn connect_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawWs {
        let stream = timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .expect("connect within 10 s")
            .expect("connect");
        RawWs::upgrade(stream, path, headers, &[]).await
    }

    /// Upgrades, writing `early` (e.g. a first frame) in the same write as the request, before
    /// the server has answered.
    pub async fn connect_with_early_data(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        early: &[u8],
    ) -> RawWs {
        let stream = timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .expect("connect within 10 s")
            .expect("connect");
        RawWs::upgrade(stream, path, headers, early).await
    }

    /// Upgrades over a socket set up by the caller (e.g. with a small receive buffer).
    pub async fn connect_socket(
        socket: TcpSocket,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> RawWs {
        let stream = timeout(Duration::from_secs(10), socket.connect(addr))
            .await
            .expect("connect within 10 s")
            .expect("connect");
        RawWs::upgrade(stream, path, headers, &[]).await
    }

    async fn upgrade(
        stream: TcpStream,
        path: &str,
        headers: &[(&str, &str)],
        early: &[u8],
    ) -> RawWs {
        let mut request = upgrade_request("GET", path, headers).into_bytes();
        request.extend_from_slice(early);
        let (response, stream, rest) =
            timeout(Duration::from_secs(10), http_exchange_on(stream, &request))
                .await
                .expect("handshake within 10 s")
                .expect("handshake");
        assert_eq!(
            response.status,
            101,
            "expected 101 for {path}, got {response:?} {:?}",
            response.body_text()
        );
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some(SAMPLE_ACCEPT),
            "Sec-WebSocket-Accept"
        );
        let (read, write) = stream.into_split();
        RawWs {
            reader: FrameReader {
                half: read,
                buf: rest,
                pos: 0,
            },
            writer: FrameWriter { half: write },
            response,
        }
    }

    /// The client's own address (its port identifies the connection on the server's side).
    pub fn local_addr(&self) -> SocketAddr {
        self.writer.half.local_addr().expect("local address")
    }

    pub async fn send(&mut self, frame: OutFrame) {
        self.writer.send(&frame).await.expect("send a frame");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.send_raw(bytes).await.expect("send bytes");
    }

    /// The next frame within `limit` (panics otherwise).
    pub async fn recv(&mut self, limit: Duration) -> InFrame {
        self.reader.recv(limit).await
    }

    /// The next frame that is not a ping (keepalive pings are skipped), within `limit`.
    pub async fn recv_skipping_pings(&mut self, limit: Duration) -> InFrame {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.reader.recv(left).await;
            if frame.opcode != OP_PING {
                return frame;
            }
        }
    }

    /// Expects the next frame to be a close frame, then the end of the connection with nothing
    /// after the close frame. Returns the close frame and how long the end took after it.
    pub async fn expect_close_then_end(&mut self, limit: Duration) -> (InFrame, Duration) {
        let frame = self.reader.recv(limit).await;
        assert!(
            frame.is_close(),
            "expected a close frame, got {}",
            frame.describe()
        );
        assert!(!frame.masked, "server frames must not be masked");
        let closed_at = Instant::now();
        let (after, end) = self.reader.read_to_end(limit).await;
        assert!(
            after.is_empty(),
            "the server wrote {} bytes after its close frame: {:?}",
            after.len(),
            String::from_utf8_lossy(&after[..after.len().min(64)])
        );
        assert_eq!(end, StreamEnd::Eof, "the connection should end with FIN");
        (frame, closed_at.elapsed())
    }
}
