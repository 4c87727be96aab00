//! Plain HTTP: one file per concern. Routes that are not WebSocket handshakes end here.

mod byteranges;
mod conditional;
mod error;
mod file_body;
mod health;
pub mod metrics;
mod ranges;
mod safe_path;
mod static_files;
mod status;

use actix_web::web;

pub use static_files::StaticFiles;

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
        cfg.default_service(web::to(static_files::serve));
    }
}

/// The routes of the separate metrics listener (`--metrics-bind`).
pub fn metrics_only(path: &str) -> impl FnOnce(&mut web::ServiceConfig) + '_ {
    move |cfg| {
        cfg.route(path, web::get().to(metrics::scrape));
    }
}
