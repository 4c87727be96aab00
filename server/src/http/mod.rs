//! Plain HTTP: one file per concern. Routes that are not WebSocket handshakes end here.

mod body;
pub(crate) mod byteranges;
mod conditional;
mod error;
pub(crate) mod file_body;
mod file_cache;
pub mod front_door;
mod head_limit;
mod health;
pub mod metrics;
mod publish;
pub(crate) mod ranges;
pub mod request_error;
mod safe_path;
mod static_files;
mod status;
pub(crate) mod upload;

use actix_web::web;

pub use body::BodyLimits;
pub use publish::Publishing;
pub use static_files::StaticFiles;
pub use upload::Uploads;

/// Where the built-in endpoints live (each path is a flag).
#[derive(Debug, Clone)]
pub struct EndpointPaths {
    pub health: String,
    pub ready: String,
    pub status: String,
    /// `None` when the metrics are served on their own address.
    pub metrics: Option<String>,
}

/// Registers the HTTP routes: the built-in endpoints, then the static file server as the
/// fallback for every other path.
pub fn routes(paths: &EndpointPaths) -> impl FnOnce(&mut web::ServiceConfig) + '_ {
    move |cfg| {
        cfg.route(&paths.health, web::get().to(health::live))
            .route(&paths.ready, web::get().to(health::ready))
            .route(&paths.status, web::get().to(status::status));
        if let Some(metrics_path) = &paths.metrics {
            cfg.route(metrics_path, web::get().to(metrics::scrape));
        }
        // Every method reaches these handlers, which answer 405 with `Allow` themselves.
        cfg.route("/upload", web::route().to(upload::upload))
            .route("/api/publish", web::route().to(publish::publish));
        cfg.default_service(web::to(static_files::serve));
    }
}

/// The routes of the separate metrics listener (`--metrics-bind`).
pub fn metrics_only(path: &str) -> impl FnOnce(&mut web::ServiceConfig) + '_ {
    move |cfg| {
        cfg.route(path, web::get().to(metrics::scrape));
    }
}
