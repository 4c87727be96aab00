//! Writing encoded frames straight to a connection's socket, from this worker's thread.
//!
//! actix-http owns the socket, and bytes it has buffered must reach the peer before any written
//! here. So a direct write is only made while actix-http holds none of the connection's bytes:
//! the writer checks that during its poll (the vendored dispatcher tells it), and records it in
//! the outbox (`Outbox::is_direct`) for the shard's broadcast flush. Whatever the socket does
//! not take goes back to the writer, which hands it to actix-http (which then waits for the
//! socket to become writable, and reports errors). Plain TCP only: the fd is the socket itself.

use std::{cell::RefCell, os::fd::RawFd};

use bytes::BytesMut;

use crate::outbox::CHUNK;

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

/// Sends what the socket takes without blocking; returns how many bytes it took (0 when it
/// would block or failed: the caller leaves the rest, and any error, to actix-http).
///
/// The caller guarantees that `fd` is the connection's socket and is open: its writer is alive
/// (the connection's dispatcher, which owns the socket, outlives the writer), on this thread.
pub fn send(fd: RawFd, bytes: &[u8]) -> usize {
    // SAFETY: `fd` is an open socket (see above); the pointer and length describe `bytes`.
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
