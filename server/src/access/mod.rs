//! Who may open a WebSocket, and as whom: the `Origin` check ([`origin`]) and the connection
//! token ([`switchboard_actors::access`]), applied to each handshake before a session starts.

pub mod origin;
pub mod token_source;

use std::sync::Arc;

use actix_web::{http::header, HttpRequest};
use switchboard_actors::{
    access::{Identity, TokenError, TokenVerifier},
    metrics::METRICS,
    protocol::{ConnectionInfo, ProtocolSpec},
};

use self::origin::OriginPolicy;

/// The access rules of WebSocket handshakes, built once at start-up.
pub struct Access {
    pub origins: OriginPolicy,
    /// `None`: tokens are off.
    pub tokens: Option<Arc<TokenVerifier>>,
}

/// Why a handshake was refused by the access rules.
#[derive(Debug, thiserror::Error)]
pub enum AccessRefusal {
    #[error("origin {0} is not allowed to open a WebSocket here (see --allowed-origins)")]
    Origin(String),
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error(
        "the token does not allow room \"{0}\" (a private room needs a matching `rooms` claim)"
    )]
    Room(String),
}

impl Access {
    /// Checks a handshake's origin and token, and that the token allows the room the protocol
    /// joins at once (`spec.room_param`). Returns the connection's identity (`None`: tokens are
    /// off). Each refusal is counted and logged here.
    pub fn admit(
        &self,
        req: &HttpRequest,
        spec: &ProtocolSpec,
    ) -> Result<Option<Arc<Identity>>, AccessRefusal> {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|value| value.to_str().ok());
        if !self.origins.allows(origin.as_deref(), host) {
            let origin = origin.unwrap_or_default();
            METRICS.refused_origin.inc();
            log::info!("WebSocket refused: origin {origin} not allowed");
            return Err(AccessRefusal::Origin(origin));
        }
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        let identity = token_source::presented(req)
            .ok_or(TokenError::Missing)
            .and_then(|token| tokens.verify(&token))
            .inspect_err(|error| {
                METRICS.refused_token.inc();
                log::info!("WebSocket refused: {error}");
            })?;
        if let Some(param) = spec.room_param {
            let room = ConnectionInfo::query_value(req.query_string(), param).unwrap_or_default();
            if !identity.may_join(&room) {
                METRICS.refused_room.inc();
                log::info!("WebSocket refused: {} may not join {room}", identity.sub);
                return Err(AccessRefusal::Room(room));
            }
        }
        Ok(Some(Arc::new(identity)))
    }
}
