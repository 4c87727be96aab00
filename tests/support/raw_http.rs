//! Raw HTTP/1.1 over `TcpStream`, for requests no HTTP library would send as they are (path
//! tricks, trickled heads, malformed requests) and replies read byte by byte.

use std::{
    io::{self, Read},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

/// A response as it came on the wire.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A connection with read and write timeouts of `timeout`.
pub fn connect(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, timeout).expect("connect");
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.set_write_timeout(Some(timeout)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

pub fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads more bytes into `buf`, waiting until `deadline`: a timeout error then, `UnexpectedEof`
/// when the peer closed.
pub fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    stream.set_read_timeout(Some(left))?;
    let mut chunk = [0; 16 * 1024];
    let n = stream.read(&mut chunk)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Reads one whole response to a request other than HEAD.
pub fn read_reply(stream: &mut TcpStream, deadline: Instant) -> io::Result<RawReply> {
    read_reply_to("GET", stream, deadline)
}

/// Reads one whole response to a `method` request: no body after HEAD or with a 1xx, 204 or
/// 304 status (RFC 9112 §6.3); else by `Content-Length`, chunked, or to the end. A bodiless
/// reply on a closing connection is still read to the end, so that stray bytes show in `body`.
pub fn read_reply_to(
    method: &str,
    stream: &mut TcpStream,
    deadline: Instant,
) -> io::Result<RawReply> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        read_more(stream, &mut buf, deadline)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let mut reply = RawReply {
        status,
        headers,
        body: Vec::new(),
    };
    let bodiless = method == "HEAD" || matches!(reply.status, 100..=199 | 204 | 304);
    let closing = reply
        .header("connection")
        .is_some_and(|value| value.eq_ignore_ascii_case("close"));
    if bodiless && !closing {
        reply.body = buf[head_end..].to_vec();
    } else if let (false, Some(length)) = (bodiless, reply.header("content-length")) {
        let length: usize = length.parse().unwrap();
        while buf.len() < head_end + length {
            read_more(stream, &mut buf, deadline)?;
        }
        reply.body = buf[head_end..head_end + length].to_vec();
    } else if !bodiless
        && reply
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
    {
        while !buf[head_end..].ends_with(b"0\r\n\r\n") {
            read_more(stream, &mut buf, deadline)?;
        }
        reply.body = buf[head_end..].to_vec();
    } else {
        loop {
            match read_more(stream, &mut buf, deadline) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(err) => return Err(err),
            }
        }
        reply.body = buf[head_end..].to_vec();
    }
    Ok(reply)
}
