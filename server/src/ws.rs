//! The WebSocket handshake: any request carrying `Upgrade: websocket` is one, whatever its path
//! (as in libwebsockets: `http://host/` serves the page, `ws://host/` upgrades on the same path).
//! It checks the request, picks the protocol from `Sec-WebSocket-Protocol`, and starts a session.

use std::{rc::Rc, sync::Arc, time::SystemTime};

use actix_web::{
    guard::{self, GuardContext},
    http::{header, StatusCode},
    web, HttpRequest, HttpResponse, ResponseError,
};
use switchboard_actors::{
    deflate::{self, Compression},
    metrics::METRICS,
    next_session_id,
    outbox::Outbox,
    protocol::{ConnectionInfo, ProtocolSpec},
    protocols,
    session::Session,
    slots::SessionSlots,
    transport, ConnectionFd, ProtocolSettings, SessionConfig,
};

use crate::access::{Access, AccessRefusal};

/// What the handshake needs, built once at start-up.
pub struct Handshake {
    /// The protocol of a client that offers none (`None`: such a client is refused).
    default_protocol: Option<&'static ProtocolSpec>,
    session: Arc<SessionConfig>,
    settings: ProtocolSettings,
    /// The session cap.
    slots: Option<Arc<SessionSlots>>,
    access: Access,
    /// `None`: `--compression off`, every permessage-deflate offer is declined.
    compression: Option<Compression>,
}

impl Handshake {
    pub fn new(
        default_protocol: Option<&'static ProtocolSpec>,
        session: Arc<SessionConfig>,
        settings: ProtocolSettings,
        access: Access,
        slots: Arc<SessionSlots>,
        compression: Option<Compression>,
    ) -> Handshake {
        Handshake {
            default_protocol,
            session,
            settings,
            slots: Some(slots),
            access,
            compression,
        }
    }

    /// The settings of the sessions this handshake starts.
    pub fn session(&self) -> &Arc<SessionConfig> {
        &self.session
    }
}

/// Seconds a client refused at the session cap is asked to wait.
const RETRY_AFTER_SECONDS: u32 = 5;

/// Why a handshake was refused; each maps to a status and a plain-text reason.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeRefusal {
    #[error("a WebSocket handshake must use GET")]
    NotGet,
    #[error("a WebSocket handshake needs `Connection: Upgrade`")]
    NoConnectionUpgrade,
    #[error("a WebSocket handshake needs `Upgrade: websocket`")]
    NoUpgrade,
    #[error("unsupported WebSocket version: this server speaks version 13")]
    UnsupportedVersion,
    #[error("missing or malformed Sec-WebSocket-Key")]
    BadKey,
    #[error(
        "none of the offered protocols ({offered}) is served here; this server speaks: {known}"
    )]
    UnknownProtocol { offered: String, known: String },
    #[error("no protocol offered and this server has no default; it speaks: {known}")]
    NoProtocol { known: String },
    #[error("the server is at its limit of {0} WebSocket connections; retry later")]
    AtCapacity(usize),
    #[error(transparent)]
    Access(#[from] AccessRefusal),
}

impl ResponseError for HandshakeRefusal {
    fn status_code(&self) -> StatusCode {
        match self {
            HandshakeRefusal::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            HandshakeRefusal::AtCapacity(_) => StatusCode::SERVICE_UNAVAILABLE,
            HandshakeRefusal::Access(AccessRefusal::Token(_)) => StatusCode::UNAUTHORIZED,
            HandshakeRefusal::Access(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            HandshakeRefusal::UnsupportedVersion => {
                response.insert_header((header::SEC_WEBSOCKET_VERSION, "13"));
            }
            HandshakeRefusal::AtCapacity(_) => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string()));
            }
            HandshakeRefusal::Access(AccessRefusal::Token(_)) => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, r#"Bearer error="invalid_token""#));
            }
            _ => {}
        }
        response
            .content_type("text/plain; charset=utf-8")
            .body(format!("{self}\n"))
    }
}

impl From<actix_http::ws::HandshakeError> for HandshakeRefusal {
    fn from(err: actix_http::ws::HandshakeError) -> Self {
        use actix_http::ws::HandshakeError as E;
        match err {
            E::GetMethodRequired => HandshakeRefusal::NotGet,
            E::NoWebsocketUpgrade => HandshakeRefusal::NoUpgrade,
            E::NoConnectionUpgrade => HandshakeRefusal::NoConnectionUpgrade,
            E::NoVersionHeader | E::UnsupportedVersion => HandshakeRefusal::UnsupportedVersion,
            E::BadWebsocketKey => HandshakeRefusal::BadKey,
        }
    }
}

/// Registers the handshake ahead of every other route: on `path`, or on every path (`None`).
/// A request without `Upgrade: websocket` goes on to the other routes.
pub fn routes(cfg: &mut web::ServiceConfig, path: Option<&str>) {
    match path {
        Some(path) => cfg.service(
            web::resource(path)
                .guard(guard::fn_guard(asks_for_websocket))
                .to(upgrade),
        ),
        None => cfg.service(
            web::scope("")
                .guard(guard::fn_guard(asks_for_websocket))
                .default_service(web::to(upgrade)),
        ),
    };
}

/// `Upgrade: websocket` (case-insensitive, possibly among other tokens).
fn asks_for_websocket(ctx: &GuardContext<'_>) -> bool {
    ctx.head()
        .headers()
        .get_all(header::UPGRADE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("websocket"))
}

async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    handshake: web::Data<Handshake>,
) -> Result<HttpResponse, HandshakeRefusal> {
    actix_http::ws::verify_handshake(req.head())?;
    let (spec, offered) = choose_protocol(&req, handshake.default_protocol)?;
    let identity = handshake.access.admit(&req, spec)?;
    let slot = match &handshake.slots {
        Some(slots) => Some(slots.try_take().ok_or_else(|| {
            METRICS.sessions_refused.inc();
            HandshakeRefusal::AtCapacity(slots.max())
        })?),
        None => None,
    };
    let info = ConnectionInfo {
        id: next_session_id(),
        protocol: spec.name,
        peer: req.peer_addr(),
        path: req.path().into(),
        query: req.query_string().into(),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .into(),
        connected_at: SystemTime::now(),
        identity,
    };
    let config = &handshake.session;
    let fd = req.conn_data::<ConnectionFd>().copied();
    let compression = handshake.compression.filter(|_| spec.compression);
    let deflate = compression.and_then(|_| {
        deflate::negotiate(
            req.headers()
                .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .filter_map(|value| value.to_str().ok()),
        )
    });
    let outbox = Outbox::new(config.max_backlog, config.slow_consumer, fd)
        .with_compression(deflate.as_ref().and(compression));
    let outbox = Rc::new(outbox);
    let protocol = spec.start(&info, &handshake.settings);
    let session = Session::new(
        protocol,
        info,
        outbox.clone(),
        config.max_message_size,
        slot,
    );
    Ok(transport::start(
        &req,
        payload,
        offered.then_some(spec.name),
        deflate.as_ref(),
        config.max_message_size,
        session,
        outbox,
    ))
}

/// The first protocol the client offers that this server knows; none offered → the default.
/// The flag says whether it was offered: only then is it named in the 101 (RFC 6455 §4.2.2).
fn choose_protocol(
    req: &HttpRequest,
    default: Option<&'static ProtocolSpec>,
) -> Result<(&'static ProtocolSpec, bool), HandshakeRefusal> {
    let offered: Vec<&str> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect();
    if offered.is_empty() {
        return default
            .map(|spec| (spec, false))
            .ok_or_else(|| HandshakeRefusal::NoProtocol {
                known: protocols::names(),
            });
    }
    offered
        .iter()
        .find_map(|name| protocols::find(name))
        .map(|spec| (spec, true))
        .ok_or_else(|| HandshakeRefusal::UnknownProtocol {
            offered: offered.join(", "),
            known: protocols::names(),
        })
}
