//! Plain HTTP: one file per concern. Routes that are not WebSocket handshakes end here.

mod byteranges;
mod conditional;
mod error;
mod file_body;
mod ranges;
mod safe_path;
mod static_files;

use actix_web::web;

pub use static_files::StaticFiles;

/// Registers the HTTP routes. The static file server is the fallback for every path.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.default_service(web::to(static_files::serve));
}
