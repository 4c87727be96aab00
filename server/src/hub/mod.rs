//! The hub: Switchboard's WebSocket side, mounted into an actix-web application.

mod builder;
mod error;
mod handle;

use std::sync::Arc;

use actix_web::web;
use switchboard_actors::{access::TokenVerifier, registry};

pub use builder::HubBuilder;
pub use error::{HandleError, HubError};
pub(crate) use handle::publish_to;
pub use handle::HubHandle;

use crate::{
    http::{self, metrics::MetricsRegistry, Endpoints},
    state::ServerState,
    ws,
};

/// A built hub: its protocols, limits and access rules, ready to be mounted on every worker of
/// the application's `HttpServer` ([`Hub::configure`]). Cloning it is cheap.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<Inner>,
}

/// What every worker's mount shares.
pub(crate) struct Inner {
    pub(crate) handshake: web::Data<ws::Handshake>,
    pub(crate) state: Arc<ServerState>,
    pub(crate) metrics: web::Data<MetricsRegistry>,
    pub(crate) static_files: Option<web::Data<http::StaticFiles>>,
    pub(crate) endpoints: Option<Endpoints>,
    /// The checker of connection tokens (`None`: tokens are off).
    pub(crate) tokens: Option<Arc<TokenVerifier>>,
}

impl Hub {
    /// A builder with the defaults of the `switchboard` binary.
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
    }

    /// Mounts the hub into an `App` of one worker: WebSocket handshakes on `path` (a request
    /// to `path` without `Upgrade: websocket` falls through to the application's other
    /// routes), and the [static files](HubBuilder::static_files) and the
    /// [operational endpoints](HubBuilder::endpoints) when they are switched on.
    ///
    /// Call it inside the `HttpServer::new` factory, which runs on every worker: it starts
    /// that worker's part of the connection registry.
    pub fn configure(&self, path: &str) -> impl FnOnce(&mut web::ServiceConfig) + 'static {
        self.mount(Some(path.to_owned()))
    }

    /// Like [`Hub::configure`], with WebSocket handshakes on every path, as the `switchboard`
    /// binary (and libwebsockets) do: `http://host/` serves a page, `ws://host/` upgrades.
    pub fn configure_any_path(&self) -> impl FnOnce(&mut web::ServiceConfig) + 'static {
        self.mount(None)
    }

    /// The Prometheus metrics alone at `path`, for an `App` on another address (the binary's
    /// `--metrics-bind`). It starts no part of the registry, so it may run on any server.
    pub fn metrics_endpoint(&self, path: &str) -> impl FnOnce(&mut web::ServiceConfig) + 'static {
        let metrics = self.inner.metrics.clone();
        let path = path.to_owned();
        move |cfg| {
            cfg.app_data(metrics);
            http::metrics_route(cfg, &path);
        }
    }

    /// A handle for the application's own code: publish, close, count.
    pub fn handle(&self) -> HubHandle {
        HubHandle {
            state: self.inner.state.clone(),
        }
    }

    fn mount(&self, path: Option<String>) -> impl FnOnce(&mut web::ServiceConfig) + 'static {
        let inner = self.inner.clone();
        move |cfg| {
            registry::start_local_shard(inner.handshake.session().clone());
            // Data types private to this crate: none can collide with the application's own.
            cfg.app_data(inner.handshake.clone());
            ws::routes(cfg, path.as_deref());
            if let Some(endpoints) = &inner.endpoints {
                cfg.app_data(web::Data::from(inner.state.clone()))
                    .app_data(inner.metrics.clone());
                http::endpoint_routes(cfg, endpoints);
            }
            if let Some(files) = &inner.static_files {
                cfg.app_data(files.clone());
                http::static_routes(cfg);
            }
        }
    }
}
