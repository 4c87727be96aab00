//! Why a static-file request was not answered with the file, and the one place where each reason
//! becomes an HTTP status.
//!
//! Every refusal is answered with a short plain-text reason, so that a user looking at the
//! response (or the access log plus a curl) can tell a bad path from a missing file.

use std::io;

use actix_web::{
    http::{header, StatusCode},
    HttpResponse, ResponseError,
};

/// A static-file request that ends without the file's bytes.
#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    /// The request path cannot name a file at all (bad percent-encoding, an encoded `/`, a
    /// backslash, a NUL byte, ...). The reason is shown to the client.
    #[error("bad request path: {0}")]
    BadPath(&'static str),
    /// Nothing to serve here. Also the answer for everything the server refuses to reveal
    /// (`..`, hidden files, symlinks leaving the static directory), so that a probe cannot tell
    /// "forbidden" from "absent".
    #[error("not found")]
    NotFound,
    /// The file exists but the server's user may not read it.
    #[error("forbidden")]
    Forbidden,
    /// Static files only answer GET and HEAD.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Every requested range starts at or past the end of the file (`len` bytes long).
    #[error("range not satisfiable")]
    RangeNotSatisfiable { len: u64 },
    /// Anything else the file system reported; logged, and answered 500 without details.
    #[error("internal error")]
    Io(#[source] io::Error),
}

impl From<io::Error> for StaticError {
    /// File-system errors that mean "there is no such file here" become 404 rather than 500:
    /// a path through a regular file (ENOTDIR), a symlink loop, or a name too long to exist.
    fn from(err: io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG) => {
                StaticError::NotFound
            }
            Some(libc::EACCES | libc::EPERM) => StaticError::Forbidden,
            _ if err.kind() == io::ErrorKind::NotFound => StaticError::NotFound,
            _ => StaticError::Io(err),
        }
    }
}

impl ResponseError for StaticError {
    fn status_code(&self) -> StatusCode {
        match self {
            StaticError::BadPath(_) => StatusCode::BAD_REQUEST,
            StaticError::NotFound => StatusCode::NOT_FOUND,
            StaticError::Forbidden => StatusCode::FORBIDDEN,
            StaticError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            StaticError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            StaticError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.content_type("text/plain; charset=utf-8");
        match self {
            StaticError::MethodNotAllowed => {
                response.insert_header((header::ALLOW, "GET, HEAD"));
            }
            StaticError::RangeNotSatisfiable { len } => {
                // RFC 7233 §4.4: tell the client how long the file really is.
                response.insert_header((header::CONTENT_RANGE, format!("bytes */{len}")));
                response.insert_header((header::ACCEPT_RANGES, "bytes"));
            }
            StaticError::Io(err) => log::error!("static file: {err}"),
            _ => {}
        }
        response.body(format!("{self}\n"))
    }
}
