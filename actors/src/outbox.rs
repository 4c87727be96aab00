//! A connection's outbound queue: every frame the server sends to one peer passes through it.
//!
//! libwebsockets' rule is "only write when writable". The queue is drained by the response body
//! (see [`crate::transport`]) only when actix-http asks for more bytes, i.e. when the socket has
//! taken what it had. So `queued - written` is exactly the connection's backlog, and producers
//! (the session itself, the shard fanning out a broadcast, the watchdog sending pings) check it
//! before adding more: over `--max-backlog` the slow-consumer policy applies, and memory stays
//! bounded however slow the peer is.
//!
//! Everything here lives on the connection's worker thread (`Rc`/`Cell`, no locks).

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    task::Waker,
    time::Instant,
};

use actix_http::ws::OpCode;
use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    close::CloseError,
    deflate::{Compression, Deflated},
    message::Message,
    metrics::METRICS,
    socket::{self, Shutdown, Socket},
    ConnectionFd, SlowConsumerPolicy,
};

/// One frame to write. The payload is shared, never copied per recipient.
#[derive(Debug, Clone)]
pub struct Frame {
    pub opcode: OpCode,
    pub fin: bool,
    pub payload: Bytes,
    /// RSV1: the payload is compressed (permessage-deflate, RFC 7692 §6).
    pub rsv1: bool,
    /// A whole data message's compressed form, computed by the first recipient that negotiated
    /// compression and shared by every copy of this frame (see [`Deflated`]).
    pub deflated: Option<Deflated>,
}

/// What a connection's queue holds: frames not yet begun, and wire bytes of a frame already
/// begun (the rest of a payload cut at a chunk's end, or of a write the socket did not fully
/// take), which go out exactly as they are, before anything else.
#[derive(Debug)]
enum Queued {
    Frame(Frame),
    Wire(Bytes),
}

/// Largest chunk encoded at once (a frame header may add up to [`MAX_HEADER`] to it): a larger
/// payload is cut at the chunk's end and its rest queued as wire bytes, so that no buffer
/// grows to the size of a message.
pub const CHUNK: usize = 64 * 1024;
/// Longest header of an unmasked frame (RFC 6455 §5.2).
pub const MAX_HEADER: usize = 10;

/// What one [`Outbox::fill`] put in a chunk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Filled {
    /// Data messages whose last frame was begun (for the messages-sent count).
    pub(crate) messages: u64,
    /// Whether the close frame was put in (nothing follows it).
    pub(crate) close: bool,
}

impl Frame {
    pub fn message(message: &Message) -> Frame {
        match message {
            Message::Text(text) => Frame::data(OpCode::Text, true, text.as_bytes().clone()),
            Message::Binary(data) => Frame::data(OpCode::Binary, true, data.clone()),
        }
    }

    /// A frame; a whole text or binary message gets a slot for its shared compressed form.
    pub fn data(opcode: OpCode, fin: bool, payload: Bytes) -> Frame {
        let whole_message = fin && matches!(opcode, OpCode::Text | OpCode::Binary);
        Frame {
            opcode,
            fin,
            payload,
            rsv1: false,
            deflated: whole_message.then(Deflated::default),
        }
    }

    /// This frame as a peer with `compression` gets it: a whole message at least
    /// `min_size` long goes compressed (with RSV1) if that makes it smaller.
    fn for_peer(self, compression: Option<Compression>) -> Frame {
        let (Some(compression), Some(deflated)) = (compression, &self.deflated) else {
            return self;
        };
        if self.payload.len() < compression.min_size {
            return self;
        }
        match deflated.get_or_compress(&self.payload) {
            Some(payload) => Frame {
                payload,
                rsv1: true,
                deflated: None,
                ..self
            },
            None => self,
        }
    }

    /// Appends this frame's unmasked header (RFC 6455 §5.2); the payload follows separately.
    fn write_header(&self, chunk: &mut BytesMut) {
        let first = u8::from(self.opcode)
            | if self.fin { 0x80 } else { 0 }
            | if self.rsv1 { 0x40 } else { 0 };
        let len = self.payload.len();
        match len {
            0..=125 => chunk.put_slice(&[first, len as u8]),
            126..=65535 => {
                chunk.put_slice(&[first, 126]);
                chunk.put_u16(len as u16);
            }
            _ => {
                chunk.put_slice(&[first, 127]);
                chunk.put_u64(len as u64);
            }
        }
    }

    pub fn ping(payload: Bytes) -> Frame {
        Frame::data(OpCode::Ping, true, payload)
    }

    pub fn pong(payload: Bytes) -> Frame {
        Frame::data(OpCode::Pong, true, payload)
    }

    /// A close frame; `None` sends one with no status code (the answer to a close without one).
    pub fn close(status: Option<(u16, &str)>) -> Frame {
        let mut payload = BytesMut::new();
        if let Some((code, reason)) = status {
            payload.put_u16(code);
            payload.put_slice(reason.as_bytes());
        }
        Frame::data(OpCode::Close, true, payload.freeze())
    }

    /// Bytes this frame takes on the wire (server frames are not masked).
    pub fn wire_len(&self) -> usize {
        header_len(self.payload.len()) + self.payload.len()
    }
}

/// Length of an unmasked frame header for a payload of `len` bytes (RFC 6455 §5.2).
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// What became of a frame handed to [`Outbox::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the peer's socket.
    Queued,
    /// Skipped: the peer is over its backlog and the policy is `drop`.
    Dropped,
    /// Not sent: the connection is closing (a close frame is queued or written).
    Closed,
}

/// Whether the writer must be woken for a queued frame to go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wake {
    /// The queue was empty, so the writer is parked (or about to park).
    Needed,
    /// Nothing to do: frames were already queued (the writer comes back for them anyway), or
    /// nothing was queued.
    Pending,
}

/// What the writer does once the close frame is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterClose {
    /// End the TCP connection right away (failing the connection, or answering the peer's close).
    End,
    /// Wait for the peer's close frame, up to `--close-timeout`.
    AwaitPeer,
}

/// The outbound queue and liveness record of one connection.
#[derive(Debug)]
pub struct Outbox {
    frames: RefCell<VecDeque<Queued>>,
    queued_bytes: Cell<u64>,
    written_bytes: Cell<u64>,
    waker: RefCell<Option<Waker>>,
    close_queued_at: Cell<Option<Instant>>,
    after_close: Cell<AfterClose>,
    finish_requested: Cell<bool>,
    /// The writer is parked and actix-http holds none of this connection's bytes, so queued
    /// frames may be written straight to the socket (see [`crate::socket`]).
    direct: Cell<bool>,
    last_heard: Cell<Instant>,
    last_ping: Cell<Instant>,
    max_backlog: u64,
    policy: SlowConsumerPolicy,
    /// The connection's socket, usable while its writer lives.
    socket: Socket,
    /// Set when the peer negotiated permessage-deflate.
    compression: Option<Compression>,
}

impl Outbox {
    /// The queue of a connection being upgraded. `fd` is the connection's own socket, as
    /// recorded when it was accepted ([`ConnectionFd`]); it is used only while the connection's
    /// writer lives, and written to only if it is plain TCP (see [`crate::socket`]). `None`:
    /// never written directly.
    pub fn new(max_backlog: usize, policy: SlowConsumerPolicy, fd: Option<ConnectionFd>) -> Outbox {
        let now = Instant::now();
        Outbox {
            frames: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            written_bytes: Cell::new(0),
            waker: RefCell::new(None),
            close_queued_at: Cell::new(None),
            after_close: Cell::new(AfterClose::AwaitPeer),
            finish_requested: Cell::new(false),
            direct: Cell::new(false),
            last_heard: Cell::new(now),
            last_ping: Cell::new(now),
            max_backlog: max_backlog as u64,
            policy,
            socket: Socket::new(fd),
            compression: None,
        }
    }

    /// Sends whole messages compressed to this peer (it negotiated permessage-deflate).
    pub fn with_compression(mut self, compression: Option<Compression>) -> Outbox {
        self.compression = compression;
        self
    }

    /// Bytes queued for this connection that the socket has not taken yet.
    pub fn backlog(&self) -> u64 {
        self.queued_bytes.get() - self.written_bytes.get()
    }

    /// Queues a data or control frame, unless the connection is closing or over its backlog.
    ///
    /// The limit is checked before adding, so one message larger than `--max-backlog` still
    /// reaches a peer that keeps up; what a slow peer can pin is the limit plus one message.
    pub fn send(&self, frame: Frame) -> Delivery {
        let (delivery, wake) = self.admit(frame);
        if wake == Wake::Needed {
            self.wake_writer();
        }
        delivery
    }

    /// Like [`Outbox::send`], but leaves the rest to the caller: with [`Wake::Needed`] the
    /// writer is parked, and the frame goes out only once the caller calls
    /// [`Outbox::write_direct`] (which wakes the writer when it cannot write the frames itself).
    /// The shard's flush pass does that for all the members of a broadcast at once.
    pub(crate) fn send_deferred(&self, frame: Frame) -> (Delivery, Wake) {
        self.admit(frame)
    }

    fn admit(&self, frame: Frame) -> (Delivery, Wake) {
        if self.is_closing() {
            return (Delivery::Closed, Wake::Pending);
        }
        if self.backlog() > self.max_backlog {
            return match self.policy {
                SlowConsumerPolicy::Drop => {
                    if METRICS.slow_consumer_drops.get() == 0 {
                        log::info!("slow consumer: over the backlog limit; dropping its messages");
                    }
                    METRICS.slow_consumer_drops.inc();
                    (Delivery::Dropped, Wake::Pending)
                }
                SlowConsumerPolicy::Close => {
                    METRICS.slow_consumer_closes.inc();
                    log::info!(
                        "slow consumer: {} bytes queued, over the {} byte backlog limit; closing with 1008",
                        self.backlog(),
                        self.max_backlog
                    );
                    self.discard_queue();
                    self.close(&CloseError::SlowConsumer, AfterClose::AwaitPeer);
                    (Delivery::Closed, Wake::Pending)
                }
            };
        }
        (
            Delivery::Queued,
            self.enqueue(frame.for_peer(self.compression)),
        )
    }

    /// Queues several frames that must stay together (the fragments of one message), so that
    /// no other frame lands between them.
    pub fn send_all(&self, frames: impl IntoIterator<Item = Frame>) -> Delivery {
        let mut frames = frames.into_iter();
        let Some(first) = frames.next() else {
            return Delivery::Queued;
        };
        let delivery = self.send(first);
        if delivery == Delivery::Queued {
            frames.for_each(|frame| {
                self.enqueue(frame);
            });
        }
        delivery
    }

    /// Queues a close frame as the last frame of this connection. Returns false if a close was
    /// already queued (only one is ever sent).
    pub fn close(&self, reason: &CloseError, after: AfterClose) -> bool {
        self.close_with(Some((reason.code(), &reason.reason())), after)
    }

    /// Queues a close frame with the given status (`None`: no status code).
    pub fn close_with(&self, status: Option<(u16, &str)>, after: AfterClose) -> bool {
        if self.is_closing() {
            return false;
        }
        if let Some((code, _)) = status {
            METRICS.record_close_code(code);
        }
        self.close_queued_at.set(Some(Instant::now()));
        self.after_close.set(after);
        if self.enqueue(Frame::close(status)) == Wake::Needed {
            self.wake_writer();
        }
        true
    }

    /// Whether a close frame has been queued.
    pub fn is_closing(&self) -> bool {
        self.close_queued_at.get().is_some()
    }

    pub fn close_queued_at(&self) -> Option<Instant> {
        self.close_queued_at.get()
    }

    /// Asks the writer to end the connection as soon as it runs, whatever is still queued.
    pub fn request_finish(&self) {
        self.finish_requested.set(true);
        self.wake_writer();
    }

    /// Ends the TCP connection at the socket, for a peer so stuck that the writer never runs.
    pub fn kill_socket(&self) {
        self.socket.shutdown(Shutdown::Both);
    }

    /// Sends FIN on the socket (the server closes TCP first, RFC 6455 §7.1.1), keeping the read
    /// side open so the peer's last bytes are read, not answered with RST. On TLS actix-http
    /// does it (close_notify, then FIN) once the TLS layer has flushed the close frame, so this
    /// must be called from the writer's poll that ends the response body.
    pub(crate) fn half_close_socket(&self) {
        self.socket.shutdown(Shutdown::Write);
    }

    /// Records that the peer sent something (any frame): the idle timer restarts.
    pub fn heard_from_peer(&self) {
        self.last_heard.set(Instant::now());
    }

    pub fn last_heard(&self) -> Instant {
        self.last_heard.get()
    }

    pub fn last_ping(&self) -> Instant {
        self.last_ping.get()
    }

    /// Queues a keepalive ping (subject to the backlog rules like any frame).
    pub fn ping(&self, now: Instant) {
        self.last_ping.set(now);
        self.send(Frame::ping(Bytes::new()));
    }

    /// Whether the connection's writer (its response body) still exists.
    pub fn is_alive(&self) -> bool {
        self.socket.is_live()
    }

    /// Appends a frame; says whether the writer needs waking for it.
    fn enqueue(&self, frame: Frame) -> Wake {
        self.queued_bytes
            .set(self.queued_bytes.get() + frame.wire_len() as u64);
        let mut frames = self.frames.borrow_mut();
        frames.push_back(Queued::Frame(frame));
        // The writer parks only with an empty queue; a non-empty one is polled again anyway.
        if frames.len() == 1 {
            Wake::Needed
        } else {
            Wake::Pending
        }
    }

    /// Frees the queued frames, except the rest of a frame partly on the wire already (the
    /// peer must get all of it before the close frame).
    fn discard_queue(&self) {
        let mut discarded = 0;
        self.frames.borrow_mut().retain(|queued| match queued {
            Queued::Wire(_) => true,
            Queued::Frame(frame) => {
                discarded += frame.wire_len() as u64;
                false
            }
        });
        self.queued_bytes.set(self.queued_bytes.get() - discarded);
    }

    /// Schedules the writer to run: it writes whatever is queued.
    fn wake_writer(&self) {
        if let Some(waker) = self.waker.borrow().as_ref() {
            waker.wake_by_ref();
        }
    }

    // ---- the writer's side (crate::transport) ----

    pub(crate) fn register_writer(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        match slot.as_ref() {
            Some(current) if current.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    /// Moves queued bytes into `chunk`, in order, until it holds [`CHUNK`] bytes (plus at most
    /// one frame header): the one encoder of this connection's byte stream, for the writer and
    /// for direct writes alike. A payload that does not fit is cut, its rest queued first as
    /// wire bytes. With `close: false` a close frame is left in the queue (for the writer,
    /// which handles what follows it); with `true` it is the last thing put in.
    pub(crate) fn fill(&self, chunk: &mut BytesMut, close: bool) -> Filled {
        let mut filled = Filled::default();
        let mut frames = self.frames.borrow_mut();
        while chunk.len() < CHUNK && !filled.close {
            let room = CHUNK - chunk.len();
            let payload = match frames.pop_front() {
                None => break,
                Some(Queued::Wire(bytes)) => bytes,
                Some(Queued::Frame(frame)) if frame.opcode == OpCode::Close && !close => {
                    frames.push_front(Queued::Frame(frame));
                    break;
                }
                Some(Queued::Frame(frame)) => {
                    filled.close = frame.opcode == OpCode::Close;
                    if frame.fin && !filled.close {
                        filled.messages += 1;
                    }
                    frame.write_header(chunk);
                    frame.payload
                }
            };
            if payload.len() > room {
                chunk.extend_from_slice(&payload[..room]);
                frames.push_front(Queued::Wire(payload.slice(room..)));
                break;
            }
            chunk.extend_from_slice(&payload);
        }
        drop(frames);
        self.release_idle_queue();
        filled
    }

    /// Writes queued frames straight to the socket, for a writer that is parked with nothing
    /// held by actix-http (else, or for what the socket does not take, it wakes the writer).
    /// One chunk at most; the close frame is left to the writer.
    pub(crate) fn write_direct(&self) {
        if !(self.direct.get() && self.socket.is_writable()) {
            return self.wake_writer();
        }
        let messages = socket::with_scratch(|chunk| {
            let filled = self.fill(chunk, false);
            if chunk.is_empty() {
                return 0;
            }
            let sent = self.socket.send(chunk);
            self.wrote(sent);
            METRICS.bytes_out.add(sent as u64);
            if sent < chunk.len() {
                // Already counted in the backlog, and begun on the wire: goes out first, as is.
                let rest = Bytes::copy_from_slice(&chunk[sent..]);
                self.frames.borrow_mut().push_front(Queued::Wire(rest));
            }
            filled.messages
        });
        if messages > 0 {
            METRICS.messages_out.add(messages);
        }
        self.release_idle_queue();
        if !self.frames.borrow().is_empty() {
            self.direct.set(false);
            self.wake_writer();
        }
    }

    /// Set by the writer each time it is polled: true when it parks with actix-http holding none
    /// of this connection's bytes.
    pub(crate) fn set_direct(&self, direct: bool) {
        self.direct.set(direct);
    }

    /// An idle connection keeps no queue storage (most connections are idle most of the time).
    fn release_idle_queue(&self) {
        let mut frames = self.frames.borrow_mut();
        if frames.is_empty() && frames.capacity() > 0 {
            *frames = VecDeque::new();
        }
    }

    pub(crate) fn wrote(&self, bytes: usize) {
        self.written_bytes
            .set(self.written_bytes.get() + bytes as u64);
    }

    /// The connection's socket.
    pub(crate) fn socket(&self) -> &Socket {
        &self.socket
    }

    pub(crate) fn finish_requested(&self) -> bool {
        self.finish_requested.get()
    }

    pub(crate) fn after_close(&self) -> AfterClose {
        self.after_close.get()
    }

    pub(crate) fn writer_dropped(&self) {
        self.socket.retire();
        self.frames.borrow_mut().clear();
        self.waker.borrow_mut().take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::ws::Parser;
    use std::os::fd::RawFd;

    fn text(len: usize) -> Frame {
        Frame::data(OpCode::Text, true, Bytes::from(vec![b'x'; len]))
    }

    /// Everything queued, as the writer would put it on the wire (chunk by chunk).
    fn drain(outbox: &Outbox) -> Vec<u8> {
        let mut wire = Vec::new();
        loop {
            let mut chunk = BytesMut::new();
            outbox.fill(&mut chunk, true);
            if chunk.is_empty() {
                return wire;
            }
            assert!(
                chunk.len() <= CHUNK + MAX_HEADER,
                "a chunk of {}",
                chunk.len()
            );
            outbox.wrote(chunk.len());
            wire.extend_from_slice(&chunk);
        }
    }

    /// The frames as actix-http's own encoder writes them: the reference for ours.
    fn encoded(frames: &[Frame]) -> Vec<u8> {
        let mut wire = BytesMut::new();
        for frame in frames {
            Parser::write_message(&mut wire, &frame.payload, frame.opcode, frame.fin, false);
        }
        wire.to_vec()
    }

    fn front_is_close(outbox: &Outbox) -> bool {
        matches!(
            outbox.frames.borrow().front(),
            Some(Queued::Frame(frame)) if frame.opcode == OpCode::Close
        )
    }

    #[test]
    fn headers_match_actix_encoding() {
        for len in [0usize, 125, 126, 65535, 65536, 200_000] {
            let frame = Frame::data(OpCode::Binary, true, Bytes::from(vec![7u8; len]));
            let mut ours = BytesMut::new();
            frame.write_header(&mut ours);
            ours.extend_from_slice(&frame.payload);
            assert_eq!(
                ours.to_vec(),
                encoded(std::slice::from_ref(&frame)),
                "payload length {len}"
            );
            assert_eq!(ours.len(), frame.wire_len());
        }
    }

    #[test]
    fn chunks_are_capped_and_large_payloads_cut_without_a_second_header() {
        let outbox = Outbox::new(16 << 20, SlowConsumerPolicy::Close, None);
        let frames: Vec<Frame> = [60_000, 65_536, 200_000, 10, 65_535]
            .into_iter()
            .map(text)
            .collect();
        for frame in &frames {
            outbox.send(frame.clone());
        }
        assert_eq!(drain(&outbox), encoded(&frames));
        assert_eq!(outbox.backlog(), 0);
    }

    #[test]
    fn backlog_counts_wire_bytes_until_written() {
        let outbox = Outbox::new(1000, SlowConsumerPolicy::Close, None);
        assert_eq!(outbox.send(text(100)), Delivery::Queued);
        assert_eq!(outbox.backlog(), 102);
        assert_eq!(drain(&outbox).len(), 102);
        assert_eq!(outbox.backlog(), 0);
    }

    #[test]
    fn drop_policy_skips_frames_while_over_the_limit() {
        let outbox = Outbox::new(150, SlowConsumerPolicy::Drop, None);
        assert_eq!(outbox.send(text(100)), Delivery::Queued);
        assert_eq!(outbox.send(text(100)), Delivery::Queued);
        assert_eq!(outbox.send(text(100)), Delivery::Dropped);
        assert!(!outbox.is_closing());
    }

    #[test]
    fn close_policy_frees_the_queue_and_queues_1008() {
        let outbox = Outbox::new(150, SlowConsumerPolicy::Close, None);
        outbox.send(text(100));
        outbox.send(text(100));
        assert_eq!(outbox.send(text(1)), Delivery::Closed);
        let mut chunk = BytesMut::new();
        let filled = outbox.fill(&mut chunk, true);
        assert!(filled.close);
        assert_eq!(
            chunk.to_vec(),
            encoded(&[Frame::close(Some((1008, "slow consumer")))])
        );
        assert_eq!(drain(&outbox), b"");
        assert_eq!(outbox.send(text(1)), Delivery::Closed);
    }

    #[test]
    fn one_message_larger_than_the_limit_still_goes_out() {
        let outbox = Outbox::new(10, SlowConsumerPolicy::Close, None);
        assert_eq!(outbox.send(text(1000)), Delivery::Queued);
    }

    #[test]
    fn only_one_close_is_queued() {
        let outbox = Outbox::new(10, SlowConsumerPolicy::Close, None);
        assert!(outbox.close_with(Some((1000, "bye")), AfterClose::End));
        assert!(!outbox.close_with(Some((1001, "again")), AfterClose::End));
    }

    /// A connected pair of Unix stream sockets: (ours, the peer's).
    fn socket_pair() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: socketpair(2) fills the two-element array.
        let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
        assert_eq!(rc, 0, "socketpair");
        (fds[0], fds[1])
    }

    /// Everything the peer can read now.
    fn read_available(fd: RawFd) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            // SAFETY: reads into `buf`, within its length.
            let n =
                unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n <= 0 {
                return all;
            }
            all.extend_from_slice(&buf[..n as usize]);
        }
    }

    fn close_fds(fds: &[RawFd]) {
        for &fd in fds {
            // SAFETY: closes fds this test opened.
            unsafe { libc::close(fd) };
        }
    }

    #[test]
    fn direct_write_puts_queued_frames_on_the_wire_in_order() {
        let (ours, peer) = socket_pair();
        let outbox = Outbox::new(
            1 << 20,
            SlowConsumerPolicy::Close,
            Some(ConnectionFd::Plain(ours)),
        );
        outbox.set_direct(true);
        let frames: Vec<Frame> = (1..=3).map(text).collect();
        for frame in &frames {
            assert_eq!(outbox.send_deferred(frame.clone()).0, Delivery::Queued);
        }
        outbox.write_direct();
        assert_eq!(read_available(peer), encoded(&frames));
        assert_eq!(outbox.backlog(), 0);
        assert!(outbox.frames.borrow().is_empty());
        close_fds(&[ours, peer]);
    }

    #[test]
    fn without_direct_mode_nothing_is_written_here() {
        let (ours, peer) = socket_pair();
        let outbox = Outbox::new(
            1 << 20,
            SlowConsumerPolicy::Close,
            Some(ConnectionFd::Plain(ours)),
        );
        outbox.send_deferred(text(10));
        outbox.write_direct();
        assert!(read_available(peer).is_empty());
        assert_eq!(drain(&outbox), encoded(&[text(10)]));
        close_fds(&[ours, peer]);
    }

    #[test]
    fn a_tls_connection_is_never_written_directly() {
        let (ours, peer) = socket_pair();
        let outbox = Outbox::new(
            1 << 20,
            SlowConsumerPolicy::Close,
            Some(ConnectionFd::Tls(ours)),
        );
        outbox.set_direct(true);
        outbox.send_deferred(text(10));
        outbox.write_direct();
        assert!(
            read_available(peer).is_empty(),
            "raw bytes past the TLS layer"
        );
        assert_eq!(drain(&outbox), encoded(&[text(10)]), "left to the writer");
        close_fds(&[ours, peer]);
    }

    #[test]
    fn close_frames_are_left_to_the_writer() {
        let (ours, peer) = socket_pair();
        let outbox = Outbox::new(
            1 << 20,
            SlowConsumerPolicy::Close,
            Some(ConnectionFd::Plain(ours)),
        );
        outbox.set_direct(true);
        let data = text(5);
        outbox.send_deferred(data.clone());
        outbox.close_with(Some((1000, "bye")), AfterClose::AwaitPeer);
        outbox.write_direct();
        assert_eq!(read_available(peer), encoded(&[data]));
        assert!(front_is_close(&outbox));
        close_fds(&[ours, peer]);
    }

    /// The case that once corrupted the stream: a direct write of two frames (over 64 KiB in
    /// all) that the socket takes only part of. The rest must reach the wire as it is.
    #[test]
    fn what_a_full_socket_does_not_take_goes_out_first_and_as_it_is() {
        let (ours, peer) = socket_pair();
        let outbox = Outbox::new(
            64 << 20,
            SlowConsumerPolicy::Close,
            Some(ConnectionFd::Plain(ours)),
        );
        let frames: Vec<Frame> = (0..40)
            .map(|n| {
                if n % 2 == 0 {
                    text(60_000)
                } else {
                    text(65_536)
                }
            })
            .collect();
        for frame in &frames {
            outbox.send_deferred(frame.clone());
        }
        // Nothing is read until the socket is full: 2.5 MB is more than its buffer.
        let mut passes = 0;
        loop {
            outbox.set_direct(true);
            outbox.write_direct();
            passes += 1;
            if !outbox.direct.get() && outbox.backlog() > 0 {
                break;
            }
            assert!(passes < 100, "the socket never filled up");
        }
        let mut wire = read_available(peer);
        wire.extend_from_slice(&drain(&outbox));
        assert!(wire == encoded(&frames), "the byte stream differs");
        assert_eq!(outbox.backlog(), 0);
        close_fds(&[ours, peer]);
    }

    #[test]
    fn a_slow_consumer_close_keeps_the_rest_of_a_frame_on_the_wire() {
        let outbox = Outbox::new(100, SlowConsumerPolicy::Close, None);
        outbox
            .frames
            .borrow_mut()
            .push_back(Queued::Wire(Bytes::from_static(b"rest")));
        outbox.queued_bytes.set(4);
        outbox.send(text(200));
        assert_eq!(outbox.send(text(1)), Delivery::Closed);
        let mut expected = b"rest".to_vec();
        expected.extend_from_slice(&encoded(&[Frame::close(Some((1008, "slow consumer")))]));
        assert_eq!(drain(&outbox), expected);
    }
}
