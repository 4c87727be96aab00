//! A connection's socket as the session's side may use it: write to it without blocking, and
//! shut it down. actix-http owns the socket; this is a handle to it that is only usable while
//! the connection's writer (its response body, polled by the dispatcher that owns the socket) is
//! alive. Both live on this worker's thread, so while the writer lives the fd is open and is
//! this connection's; once the writer is gone ([`Socket::retire`]) every call is a no-op, since
//! the fd may be closed and its number reused by another connection.
//!
//! Bytes actix-http has buffered must reach the peer before any written here, so a direct write
//! is only made while actix-http holds none of the connection's bytes (the writer checks that
//! during its poll, and records it in the outbox for the shard's broadcast flush). Whatever the
//! socket does not take goes back to the writer, which hands it to actix-http (which then waits
//! for the socket to become writable, and reports errors).
//!
//! What the handle may do depends on the kind of connection, recorded by type when it was
//! accepted ([`ConnectionFd`]): on plain TCP the fd is the byte stream itself, so it is written
//! to and half-closed here. On TLS the fd carries encrypted records, so nothing is ever written
//! to it: sends take nothing (everything goes through actix-http and the TLS layer), the
//! half-close after the close handshake is left to actix-http (which sends the TLS close_notify
//! and then FIN, after the TLS layer has flushed the close frame), and the only raw call is
//! shutdown(2) both ways, for a peer so stuck that the writer never runs (it ends TCP without
//! writing a byte).

use std::{cell::Cell, cell::RefCell, os::fd::RawFd};

use bytes::BytesMut;

use crate::{outbox::CHUNK, ConnectionFd};

/// The handle; see the module documentation.
#[derive(Debug)]
pub struct Socket {
    fd: Option<ConnectionFd>,
    live: Cell<bool>,
}

/// Which way [`Socket::shutdown`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Send FIN, keep reading (the server closes TCP first, RFC 6455 §7.1.1).
    Write,
    /// Both ways, for a peer so stuck that the writer never runs.
    Both,
}

impl Socket {
    /// The socket of a connection whose writer is about to start. `fd` must be the connection's
    /// own socket, recorded when it was accepted (`None`: not known, nothing is written here).
    pub fn new(fd: Option<ConnectionFd>) -> Socket {
        Socket {
            fd,
            live: Cell::new(true),
        }
    }

    /// Whether the writer, and so the socket, is still there.
    pub fn is_live(&self) -> bool {
        self.live.get()
    }

    /// Whether [`Socket::send`] can write at all (a known plain-TCP socket whose writer lives).
    pub fn is_writable(&self) -> bool {
        self.plain_fd().is_some()
    }

    /// The fd, if this is a live plain-TCP socket: the only kind written to directly.
    fn plain_fd(&self) -> Option<RawFd> {
        match self.fd {
            Some(ConnectionFd::Plain(fd)) if self.live.get() => Some(fd),
            _ => None,
        }
    }

    /// The writer is gone: from now on the fd may belong to someone else.
    pub fn retire(&self) {
        self.live.set(false);
    }

    /// Sends what the socket takes without blocking; returns how many bytes it took (0 when it
    /// would block, failed, the handle is retired, or the connection is TLS: the caller leaves
    /// the rest, and any error, to actix-http).
    pub fn send(&self, bytes: &[u8]) -> usize {
        let Some(fd) = self.plain_fd() else {
            return 0;
        };
        // SAFETY: while the handle is live, `fd` is this connection's open socket (see the
        // module documentation); the pointer and length describe `bytes`.
        let sent = unsafe {
            libc::send(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        usize::try_from(sent).unwrap_or(0)
    }

    /// Ends the socket, if the handle is live: shutdown(2) on a plain socket. On TLS only
    /// [`Shutdown::Both`] touches the fd (it writes nothing, and the peer gets no more bytes
    /// of any kind); [`Shutdown::Write`] asks actix-http to end the write side once it has
    /// flushed the last bytes through the TLS layer (this must be called from the writer's poll
    /// that ends the response body).
    pub fn shutdown(&self, how: Shutdown) {
        if !self.live.get() {
            return;
        }
        let (fd, how) = match (self.fd, how) {
            (None, _) => return,
            (Some(ConnectionFd::Plain(fd)), Shutdown::Write) => (fd, libc::SHUT_WR),
            (Some(ConnectionFd::Tls(_)), Shutdown::Write) => {
                return actix_http::h1::shut_down_write_when_flushed();
            }
            (Some(ConnectionFd::Plain(fd) | ConnectionFd::Tls(fd)), Shutdown::Both) => {
                (fd, libc::SHUT_RDWR)
            }
        };
        // SAFETY: while the handle is live, `fd` is this connection's open socket.
        unsafe {
            libc::shutdown(fd, how);
        }
    }
}

thread_local! {
    /// The worker's buffer for encoding frames: written to the socket and reused, so that a
    /// write allocates nothing.
    static SCRATCH: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Runs `encode_and_write` with the worker's scratch buffer, emptied first.
pub fn with_scratch<R>(encode_and_write: impl FnOnce(&mut BytesMut) -> R) -> R {
    SCRATCH.with_borrow_mut(|chunk| {
        chunk.clear();
        let result = encode_and_write(chunk);
        // A rare large chunk does not stay with the thread for good.
        if chunk.capacity() > 2 * CHUNK {
            *chunk = BytesMut::new();
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retired_handle_never_touches_the_fd_again() {
        let mut fds = [0; 2];
        // SAFETY: socketpair(2) fills the two-element array.
        let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
        assert_eq!(rc, 0, "socketpair");
        let socket = Socket::new(Some(ConnectionFd::Plain(fds[0])));
        assert!(socket.is_writable());
        assert_eq!(socket.send(b"hello"), 5);
        socket.retire();
        assert!(!socket.is_live() && !socket.is_writable());
        assert_eq!(socket.send(b"again"), 0);
        socket.shutdown(Shutdown::Both);
        let mut buf = [0u8; 16];
        // SAFETY: reads into `buf`, within its length.
        let n = unsafe {
            libc::recv(
                fds[1],
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        assert_eq!(&buf[..n as usize], b"hello", "nothing after the retirement");
        // SAFETY: as above.
        let after = unsafe {
            libc::recv(
                fds[1],
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        assert_eq!(
            after, -1,
            "no FIN either (0 would be the end of the stream)"
        );
        for fd in fds {
            // SAFETY: closes fds this test opened.
            unsafe { libc::close(fd) };
        }
        assert_eq!(Socket::new(None).send(b"x"), 0);
    }

    /// Bytes readable at `fd` now: `Some(empty)` at the end of the stream, `None` if nothing
    /// has arrived.
    fn readable(fd: RawFd) -> Option<Vec<u8>> {
        let mut buf = [0u8; 64];
        // SAFETY: reads into `buf`, within its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        usize::try_from(n).ok().map(|n| buf[..n].to_vec())
    }

    #[test]
    fn a_tls_handle_never_writes_and_can_only_end_the_connection() {
        let mut fds = [0; 2];
        // SAFETY: socketpair(2) fills the two-element array.
        let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
        assert_eq!(rc, 0, "socketpair");
        let socket = Socket::new(Some(ConnectionFd::Tls(fds[0])));
        assert!(socket.is_live());
        assert!(
            !socket.is_writable(),
            "a TLS socket is never written directly"
        );
        assert_eq!(socket.send(b"plaintext"), 0);
        // The half-close is actix-http's job on TLS: the fd itself is left as it is.
        socket.shutdown(Shutdown::Write);
        assert_eq!(
            readable(fds[1]),
            None,
            "no bytes and no FIN from the raw fd"
        );
        // A stuck peer is still ended: both ways, without a byte written.
        socket.shutdown(Shutdown::Both);
        assert_eq!(readable(fds[1]), Some(Vec::new()), "the end of the stream");
        for fd in fds {
            // SAFETY: closes fds this test opened.
            unsafe { libc::close(fd) };
        }
    }
}
