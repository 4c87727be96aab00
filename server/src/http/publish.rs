//! `POST /api/publish`: a backend sends a message to every member of a protocol's room.
//!
//! Authenticated by `Authorization: Bearer <--api-token>`, or by a connection token (JWT) whose
//! claims say `"publish_api": true`; with neither configured the endpoint is off. Body: `{"protocol": "lws-mirror-protocol", "room": "NAME", "message": "text"}` (a
//! `message` that is not a string is sent as its JSON text). Answers `{"reached": N}`, the
//! connections the message was queued for, on every worker. A protocol that owns its rooms'
//! state delivers the message itself (chat: as a message from "server", with an id, kept in
//! the room's history).

use std::sync::Arc;

use actix_web::{http::Method, web, HttpRequest, HttpResponse};
use bytestring::ByteString;
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_actors::{access::TokenVerifier, protocols};

use super::{
    body::{BodyLimits, BoundedBody},
    request_error::RequestError,
};
use crate::{access::token_source, hub::publish_to};

/// Publishing settings.
pub struct Publishing {
    pub token: Option<String>,
    /// Connection tokens with a `publish_api` claim are accepted too (`None`: tokens are off).
    pub tokens: Option<Arc<TokenVerifier>>,
    pub limits: BodyLimits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    protocol: String,
    #[serde(default)]
    room: String,
    message: Value,
}

pub async fn publish(
    req: HttpRequest,
    payload: web::Payload,
    publishing: web::Data<Publishing>,
) -> Result<HttpResponse, RequestError> {
    if req.method() != Method::POST {
        return Err(RequestError::MethodNotAllowed { allow: "POST" });
    }
    authorize(&req, &publishing)?;
    let (body, outcome) = BoundedBody::new(&req, payload, publishing.limits)?;
    let body = body.collect(&outcome).await?;
    let request: PublishRequest = serde_json::from_slice(&body)
        .map_err(|err| RequestError::BadBody(format!("invalid JSON: {err}")))?;
    let Some(spec) = protocols::find(&request.protocol) else {
        return Err(RequestError::BadBody(format!(
            "unknown protocol `{}`; this server speaks: {}",
            request.protocol,
            protocols::names()
        )));
    };
    let text = match request.message {
        Value::String(text) => text,
        other => other.to_string(),
    };
    let reached = publish_to(spec, &request.room, ByteString::from(text)).await;
    log::info!(
        "published to {}/{}: {reached} connections",
        spec.name,
        request.room
    );
    Ok(HttpResponse::Ok().json(json!({ "reached": reached })))
}

/// The API token, or a connection token allowed to publish.
fn authorize(req: &HttpRequest, publishing: &Publishing) -> Result<(), RequestError> {
    if publishing.token.is_none() && publishing.tokens.is_none() {
        return Err(RequestError::Disabled(
            "publishing (--api-token, or --auth-jwt-secret / --auth-jwt-public-key)",
        ));
    }
    let given = token_source::bearer(req).ok_or(RequestError::Unauthorized)?;
    if let Some(token) = &publishing.token {
        if same_secret(&given, token) {
            return Ok(());
        }
    }
    let identity = publishing
        .tokens
        .as_ref()
        .and_then(|tokens| tokens.verify(&given).ok())
        .ok_or(RequestError::Unauthorized)?;
    if identity.publish_api {
        Ok(())
    } else {
        Err(RequestError::Forbidden(
            "this token may not publish: it has no `\"publish_api\": true` claim",
        ))
    }
}

/// Compares the bearer token in constant time, so response timing reveals nothing about it.
fn same_secret(given: &str, token: &str) -> bool {
    let (given, token) = (given.as_bytes(), token.as_bytes());
    given.len() == token.len()
        && given
            .iter()
            .zip(token)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}
