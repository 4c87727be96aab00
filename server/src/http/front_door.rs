//! The middleware every request passes: the `--max-head` check (431), the access log, and the
//! response counters.
//!
//! The access-log line is written when the response head is ready: method, path, status, bytes
//! (the body's declared size; `-` for a stream of unknown length, such as a WebSocket) and the
//! time to the response. Nothing is kept per request after that, so a WebSocket, whose
//! "response" lasts as long as the connection, holds no logging state (actix's `Logger` keeps
//! its format and counters for the whole body).

use crate::access::token_source;
use std::{future::Future, net::SocketAddr, time::Instant};

use actix_web::{
    body::{BodySize, BoxBody, MessageBody},
    dev::{Service, ServiceRequest, ServiceResponse},
    http::{Method, StatusCode, Version},
};

use super::{head_limit, metrics};

/// Handles one request: refuse an over-large head, else pass it on; then count and log.
pub fn handle<S, B>(
    req: ServiceRequest,
    service: &S,
    max_head: usize,
) -> impl Future<Output = Result<ServiceResponse<BoxBody>, actix_web::Error>> + 'static
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    let started = Instant::now();
    // The log line's parts are copied only when the access log is on (it is the hot path of
    // static files).
    let line = log::log_enabled!(log::Level::Info).then(|| RequestLine::of(&req));
    let outcome = match head_limit::check(req.head(), max_head) {
        Ok(()) => Outcome::Call(service.call(req)),
        Err(refusal) => Outcome::Refused(req.error_response(refusal)),
    };
    async move {
        let response = match outcome {
            Outcome::Call(call) => call.await?.map_into_boxed_body(),
            Outcome::Refused(response) => response,
        };
        metrics::record_response(response.status());
        if let Some(line) = line {
            line.log(
                response.status(),
                response.response().body().size(),
                started,
            );
        }
        Ok(response)
    }
}

enum Outcome<F> {
    Call(F),
    Refused(ServiceResponse<BoxBody>),
}

/// What the access log says about a request.
struct RequestLine {
    peer: Option<SocketAddr>,
    method: Method,
    target: String,
    version: Version,
}

impl RequestLine {
    fn of(req: &ServiceRequest) -> RequestLine {
        RequestLine {
            peer: req.peer_addr(),
            method: req.method().clone(),
            // Connection tokens in the query never reach the log.
            target: req.uri().path_and_query().map_or_else(
                || req.path().to_owned(),
                |target| token_source::redacted(target.as_str()).into_owned(),
            ),
            version: req.version(),
        }
    }

    fn log(&self, status: StatusCode, size: BodySize, started: Instant) {
        let bytes = match size {
            BodySize::Sized(bytes) => bytes.to_string(),
            BodySize::None => "0".to_owned(),
            BodySize::Stream => "-".to_owned(),
        };
        let peer = self
            .peer
            .map_or_else(|| "-".to_owned(), |peer| peer.ip().to_string());
        log::info!(
            "{peer} \"{} {} {:?}\" {} {bytes} {:.3}ms",
            self.method,
            self.target,
            self.version,
            status.as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
}
