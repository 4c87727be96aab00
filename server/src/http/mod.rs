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

/// Where the operational endpoints live; each is left out when its path is `None`.
///
/// The default is the `switchboard` binary's: every endpoint on, at its flag's default path.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Liveness: `200 ok` while the process answers (`--health-path`, default `/healthz`).
    pub health: Option<String>,
    /// Readiness: 503 once a graceful shutdown has begun or, in a cluster, until the broker
    /// was reached once (`--ready-path`, default `/readyz`).
    pub ready: Option<String>,
    /// The hub's state as JSON: connections by protocol, messages, slow consumers, broker
    /// (`--status-path`, default `/status`).
    pub status: Option<String>,
    /// Prometheus metrics (`--metrics-path`, default `/metrics`).
    pub metrics: Option<String>,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            health: Some("/healthz".to_owned()),
            ready: Some("/readyz".to_owned()),
            status: Some("/status".to_owned()),
            metrics: Some("/metrics".to_owned()),
        }
    }
}

/// Registers the operational endpoints that have a path.
pub fn endpoint_routes(cfg: &mut web::ServiceConfig, endpoints: &Endpoints) {
    if let Some(path) = &endpoints.health {
        cfg.route(path, web::get().to(health::live));
    }
    if let Some(path) = &endpoints.ready {
        cfg.route(path, web::get().to(health::ready));
    }
    if let Some(path) = &endpoints.status {
        cfg.route(path, web::get().to(status::status));
    }
    if let Some(path) = &endpoints.metrics {
        metrics_route(cfg, path);
    }
}

/// Registers the Prometheus metrics at `path`.
pub fn metrics_route(cfg: &mut web::ServiceConfig, path: &str) {
    cfg.route(path, web::get().to(metrics::scrape));
}

/// The static file server, as the fallback for every path no route claimed.
pub fn static_routes(cfg: &mut web::ServiceConfig) {
    cfg.default_service(web::to(static_files::serve));
}

/// The binary's own HTTP routes: uploads and the publish API. Every method reaches these
/// handlers, which answer 405 with `Allow` themselves.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/upload", web::route().to(upload::upload))
        .route("/api/publish", web::route().to(publish::publish));
}
