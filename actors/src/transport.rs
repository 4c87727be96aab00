//! Everything specific to actix-web-actors lives here: the `WebsocketContext` that runs a
//! [`Session`] and decodes its input, and the response body that writes its [`Outbox`].
//!
//! actix-web-actors is deprecated upstream in favour of actix-ws; moving means rewriting this
//! module (and the `Context` type of the session), not the rest.
//!
//! The body ([`OutboundBody`]) does two jobs, because actix-web-actors drives the actor's context
//! only when actix-http polls the response body:
//! 1. it polls the context, so the session handles its input and mailbox;
//! 2. it drains the session's outbox into the socket, only as fast as actix-http asks for bytes.

use std::{
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
};

use actix_http::ws::Codec;
use actix_web::{http::header, web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use crate::{
    deflate::Agreement,
    frame_guard::FrameGuard,
    inbound::InboundFrames,
    metrics::METRICS,
    outbox::{AfterClose, Outbox},
    session::Session,
    socket,
};

pub use actix_web_actors::ws::{Message as WsMessage, ProtocolError};

/// The actor context sessions run in.
pub type SessionContext = actix_web_actors::ws::WebsocketContext<Session>;

/// Answers a verified handshake: 101 (naming the subprotocol if the client offered one, and
/// permessage-deflate if it was negotiated), then the session runs.
pub fn start(
    req: &HttpRequest,
    payload: web::Payload,
    protocol: Option<&'static str>,
    deflate: Option<&Agreement>,
    max_frame_size: usize,
    session: Session,
    outbox: Rc<Outbox>,
) -> HttpResponse {
    let mut response = match actix_web_actors::ws::handshake(req) {
        Ok(response) => response,
        // The caller has verified the handshake; this is only a second line of defence.
        Err(err) => return HttpResponse::BadRequest().body(err.to_string()),
    };
    if let Some(protocol) = protocol {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, protocol));
    }
    let mut codec = Codec::new().max_size(max_frame_size);
    if let Some(agreement) = deflate {
        response.insert_header((header::SEC_WEBSOCKET_EXTENSIONS, agreement.header_value()));
        codec = codec.allow_rsv1();
    }
    let input = InboundFrames::new(FrameGuard::new(payload, max_frame_size), codec);
    // The session reads its frames from `input` (see `crate::inbound`), not from the context's
    // own decoder, which is given an input that never yields.
    let context = actix_web_actors::ws::WebsocketContext::with_factory(
        futures_util::stream::pending::<Result<Bytes, actix_http::error::PayloadError>>(),
        move |ctx| {
            use actix::AsyncContext;
            ctx.add_stream(input);
            session
        },
    );
    response.streaming(OutboundBody {
        actor: Box::pin(context),
        actor_done: false,
        outbox,
        close_written: false,
        ending: Ending::No,
    })
}

type ActorStream = Pin<Box<dyn Stream<Item = Result<Bytes, actix_web::Error>>>>;

/// The WebSocket response body: drives the session and writes its outbox.
struct OutboundBody {
    actor: ActorStream,
    actor_done: bool,
    outbox: Rc<Outbox>,
    close_written: bool,
    ending: Ending,
}

/// How far the body is in ending the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    No,
    /// The last bytes were handed over; actix-http is flushing them to the socket.
    Flushing,
    Ended,
}

impl OutboundBody {
    /// Polls the session's context: its handlers run only from here.
    fn drive_actor(&mut self, cx: &mut Context<'_>) -> Option<Result<Bytes, actix_web::Error>> {
        while !self.actor_done {
            match self.actor.as_mut().poll_next(cx) {
                // Sessions write through their outbox, so the context has nothing of its own.
                Poll::Ready(Some(Ok(bytes))) if bytes.is_empty() => {}
                Poll::Ready(Some(item)) => return Some(item),
                Poll::Ready(None) => self.actor_done = true,
                Poll::Pending => break,
            }
        }
        None
    }

    /// Encodes queued frames into one chunk (see [`Outbox::fill`]); nothing after the close.
    fn fill_chunk(&mut self, chunk: &mut BytesMut) {
        if self.close_written {
            return;
        }
        let filled = self.outbox.fill(chunk, true);
        self.close_written = filled.close;
        // Added once per chunk: one shared atomic per chunk, not per frame.
        if filled.messages > 0 {
            METRICS.messages_out.add(filled.messages);
        }
    }

    /// Encodes queued frames and writes them, chunk by chunk, straight to the socket while it
    /// takes them (see [`crate::socket`]); returns the first chunk it did not fully take,
    /// for actix-http to write. `None`: everything queued is written.
    fn write_queued(&mut self) -> Option<Bytes> {
        // Only while actix-http holds none of our bytes, or ours would overtake them.
        let direct = actix_http::h1::write_buffer_is_empty();
        socket::with_scratch(|chunk| loop {
            chunk.clear();
            self.fill_chunk(chunk);
            if chunk.is_empty() {
                return None;
            }
            self.outbox.wrote(chunk.len());
            METRICS.bytes_out.add(chunk.len() as u64);
            let sent = if direct {
                self.outbox.socket().send(chunk)
            } else {
                0
            };
            if sent < chunk.len() {
                return Some(chunk.split().freeze().slice(sent..));
            }
        })
    }

    /// Ends the connection in two steps. Ending the body alone makes actix-http linger, reading,
    /// until the peer closes, while the peer waits for our FIN (RFC 6455 §7.1.1: the server
    /// closes TCP first): both would wait for the disconnect timeout. So once the last bytes (the
    /// close frame) have left actix-http's write buffer, however long a full socket takes, this
    /// half-closes the socket: the peer sees FIN right after them, and actix-http's linger ends
    /// at the peer's own FIN, without RST. Half-closing earlier would lose what is still
    /// buffered. (A socket that never drains is ended by the session's close timeout.) On TLS
    /// the half-close is actix-http's, after the TLS layer has flushed (see [`crate::socket`]).
    fn end(&mut self) -> Poll<Option<Result<Bytes, actix_web::Error>>> {
        self.outbox.set_direct(false);
        if self.ending == Ending::No {
            self.ending = Ending::Flushing;
        }
        if self.ending == Ending::Flushing {
            if !actix_http::h1::write_buffer_is_empty() {
                actix_http::h1::poll_again_when_flushed();
                return Poll::Pending;
            }
            self.outbox.half_close_socket();
            self.ending = Ending::Ended;
        }
        Poll::Ready(None)
    }
}

impl Stream for OutboundBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ending != Ending::No {
            return this.end();
        }
        if let Some(item) = this.drive_actor(cx) {
            this.outbox.set_direct(false);
            return Poll::Ready(Some(item));
        }
        this.outbox.register_writer(cx.waker());
        if this.outbox.finish_requested() {
            return this.end();
        }
        if let Some(rest) = this.write_queued() {
            this.outbox.set_direct(false);
            return Poll::Ready(Some(Ok(rest)));
        }
        let closed = this.close_written && this.outbox.after_close() == AfterClose::End;
        if closed || this.actor_done {
            this.outbox.set_direct(false);
            return this.end();
        }
        // Parked: while actix-http holds none of our bytes, a broadcast may be written directly.
        let direct = !this.close_written && actix_http::h1::write_buffer_is_empty();
        this.outbox.set_direct(direct);
        Poll::Pending
    }
}

impl Drop for OutboundBody {
    fn drop(&mut self) {
        self.outbox.writer_dropped();
    }
}
