//! Decodes a connection's input into frames, each with its RSV1 bit.
//!
//! actix-web-actors' own decoder turns frames into `ws::Message`s and drops what
//! permessage-deflate needs to know: whether a message's first frame was compressed (RSV1, which
//! the patched actix-http codec reports, see vendor/README.md). It also checks text as UTF-8
//! before it could be inflated. So the session reads frames from this stream instead, and does
//! both itself. Its buffer is released whenever it holds no partial frame, like actix-http's
//! own read buffer: an idle connection keeps none.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use actix_codec::Decoder;
use actix_http::{
    error::PayloadError,
    ws::{Codec, Frame, ProtocolError},
};
use actix_web::web::{Bytes, BytesMut};
use futures_util::Stream;

/// One decoded frame.
#[derive(Debug)]
pub struct Inbound {
    pub frame: Frame,
    /// RSV1 was set: the message this frame begins is compressed (only ever true on the first
    /// frame of a data message, and only when permessage-deflate was negotiated).
    pub compressed: bool,
}

/// The connection's frames, decoded from its byte stream.
pub struct InboundFrames<S> {
    input: S,
    codec: Codec,
    buffer: BytesMut,
    input_ended: bool,
}

impl<S> InboundFrames<S> {
    /// `codec` decides the frame size limit and whether RSV1 is allowed.
    pub fn new(input: S, codec: Codec) -> InboundFrames<S> {
        InboundFrames {
            input,
            codec,
            buffer: BytesMut::new(),
            input_ended: false,
        }
    }
}

impl<S> Stream for InboundFrames<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Inbound, ProtocolError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            // Frames already buffered come first: a burst is read one frame per poll.
            if let Some(frame) = this.codec.decode(&mut this.buffer)? {
                let compressed = this.codec.last_frame_rsv1();
                if this.buffer.is_empty() {
                    this.buffer = BytesMut::new();
                }
                return Poll::Ready(Some(Ok(Inbound { frame, compressed })));
            }
            if this.input_ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.input).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.buffer.extend_from_slice(&chunk),
                // The frame guard refuses an over-long frame before it is buffered.
                Poll::Ready(Some(Err(PayloadError::Overflow))) => {
                    return Poll::Ready(Some(Err(ProtocolError::Overflow)));
                }
                // Anything else is the socket failing (see `CloseError::from_decoder`).
                Poll::Ready(Some(Err(err))) => {
                    return Poll::Ready(Some(Err(ProtocolError::Io(io::Error::other(
                        err.to_string(),
                    )))));
                }
                Poll::Ready(None) => this.input_ended = true,
                Poll::Pending => {
                    if this.buffer.is_empty() && this.buffer.capacity() > 0 {
                        this.buffer = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}
