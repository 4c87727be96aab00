//! Request bodies read as streams, with the two bounds every body has: a total size
//! (`--max-upload`, `--max-publish-body`) and a time without progress (`--body-timeout`).
//!
//! Both apply whether the body comes with `Content-Length` or `Transfer-Encoding: chunked`
//! (actix-http decodes both into the same stream), and both are checked as bytes arrive, so
//! neither a huge body nor a stalled one ties up memory or a connection.

use std::{
    cell::Cell,
    future::Future,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
    time::Duration,
};

use actix_web::{error::PayloadError, http::header, web, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::time::{sleep, Sleep};

use super::request_error::RequestError;

/// The bounds of one body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: u64,
    pub idle: Duration,
}

/// Which bound a body broke, if any (shared with the consumer of the stream, which only sees a
/// generic payload error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    No,
    Size,
    Time,
}

/// A body stream that fails when it exceeds its size or stalls.
pub struct BoundedBody {
    payload: web::Payload,
    limits: BodyLimits,
    received: u64,
    idle_timer: Pin<Box<Sleep>>,
    broken: Rc<Cell<Broken>>,
}

/// Reports which bound a [`BoundedBody`] broke.
#[derive(Clone)]
pub struct BodyOutcome {
    broken: Rc<Cell<Broken>>,
    limits: BodyLimits,
}

impl BodyOutcome {
    /// The error to answer with when reading the body failed.
    pub fn error_for(&self, other: impl FnOnce() -> RequestError) -> RequestError {
        match self.broken.get() {
            Broken::Size => RequestError::BodyTooLarge {
                limit: self.limits.max_bytes,
            },
            Broken::Time => RequestError::BodyTimeout {
                seconds: self.limits.idle.as_secs(),
            },
            Broken::No => other(),
        }
    }
}

impl BoundedBody {
    /// Refuses at once a body whose declared length is over the limit; otherwise wraps it.
    pub fn new(
        req: &HttpRequest,
        payload: web::Payload,
        limits: BodyLimits,
    ) -> Result<(BoundedBody, BodyOutcome), RequestError> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limits.max_bytes) {
            return Err(RequestError::BodyTooLarge {
                limit: limits.max_bytes,
            });
        }
        let broken = Rc::new(Cell::new(Broken::No));
        let body = BoundedBody {
            payload,
            limits,
            received: 0,
            idle_timer: Box::pin(sleep(limits.idle)),
            broken: broken.clone(),
        };
        Ok((body, BodyOutcome { broken, limits }))
    }

    /// Reads the whole (bounded) body into memory: for small bodies such as a publish request.
    pub async fn collect(mut self, outcome: &BodyOutcome) -> Result<Bytes, RequestError> {
        let mut data = BytesMut::new();
        while let Some(chunk) = self.next().await {
            let chunk = chunk
                .map_err(|err| outcome.error_for(|| RequestError::BadBody(err.to_string())))?;
            data.extend_from_slice(&chunk);
        }
        Ok(data.freeze())
    }
}

impl Stream for BoundedBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.broken.get() != Broken::No {
            return Poll::Ready(None);
        }
        match this.payload.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.received += chunk.len() as u64;
                if this.received > this.limits.max_bytes {
                    this.broken.set(Broken::Size);
                    return Poll::Ready(Some(Err(PayloadError::Overflow)));
                }
                let deadline = tokio::time::Instant::now() + this.limits.idle;
                this.idle_timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Pending => match this.idle_timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.broken.set(Broken::Time);
                    Poll::Ready(Some(Err(PayloadError::Io(
                        std::io::ErrorKind::TimedOut.into(),
                    ))))
                }
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}
