//! Why a request with a body (uploads, publishing) or an over-large head was refused, and the
//! one place where each reason becomes an HTTP status with a plain-text reason.

use actix_web::{
    http::{header, StatusCode},
    HttpResponse, ResponseError,
};

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request body larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("request head larger than the limit of {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("no request body data for {seconds} s; giving up")]
    BodyTimeout { seconds: u64 },
    #[error("malformed request body: {0}")]
    BadBody(String),
    #[error("this endpoint needs `Authorization: Bearer <token>` with the configured API token (or a connection token with a `publish_api` claim)")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} is not enabled on this server")]
    Disabled(&'static str),
    #[error("method not allowed; this endpoint accepts {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("expected Content-Type {expected}")]
    UnsupportedMediaType { expected: &'static str },
    #[error("internal error")]
    Io(#[from] std::io::Error),
}

impl ResponseError for RequestError {
    fn status_code(&self) -> StatusCode {
        match self {
            RequestError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RequestError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            RequestError::BadBody(_) => StatusCode::BAD_REQUEST,
            RequestError::Unauthorized => StatusCode::UNAUTHORIZED,
            RequestError::Forbidden(_) => StatusCode::FORBIDDEN,
            RequestError::Disabled(_) => StatusCode::NOT_FOUND,
            RequestError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.content_type("text/plain; charset=utf-8");
        match self {
            RequestError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            RequestError::MethodNotAllowed { allow } => {
                response.insert_header((header::ALLOW, *allow));
            }
            // The rest of the body is not read: end the connection rather than drain it (a
            // `Connection: close` header alone does not stop actix-http from draining).
            RequestError::BodyTooLarge { .. } | RequestError::BodyTimeout { .. } => {
                response.force_close();
            }
            RequestError::Io(err) => log::error!("request body: {err}"),
            _ => {}
        }
        response.body(format!("{self}\n"))
    }
}
