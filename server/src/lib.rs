//! Switchboard's WebSocket hub inside an actix-web application of one's own: the upgrade on a
//! path of the application's choice, protocols of its own beside (or instead of) the built-in
//! ones, and a handle to publish to rooms, close connections and read counts, all run by the
//! application's own `HttpServer` and workers.
//!
//! ```no_run
//! use actix_web::{web, App, HttpServer};
//! use switchboard::{
//!     protocol::{Message, Protocol, ProtocolCx},
//!     Hub, HubHandle,
//! };
//!
//! /// Sends every message back, in capitals.
//! struct Shout;
//!
//! impl Protocol for Shout {
//!     fn on_message(&mut self, cx: &mut ProtocolCx<'_>, message: Message) {
//!         if let Message::Text(text) = message {
//!             cx.send_text(text.to_uppercase());
//!         }
//!     }
//! }
//!
//! async fn announce(hub: web::Data<HubHandle>) -> String {
//!     let reached = hub.publish("shout", "lobby", "hello").await.unwrap_or(0);
//!     format!("{reached}\n")
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     let hub = Hub::builder()
//!         .builtin_protocols(&["echo"])
//!         .protocol("shout", |_info| Shout)
//!         .build()
//!         .expect("a valid hub");
//!     let handle = web::Data::new(hub.handle());
//!     actix_web::rt::System::new().block_on(
//!         HttpServer::new(move || {
//!             App::new()
//!                 .app_data(handle.clone())
//!                 .route("/announce", web::post().to(announce))
//!                 // On every worker: WebSocket handshakes on /ws.
//!                 .configure(hub.configure("/ws"))
//!         })
//!         .bind("127.0.0.1:8080")?
//!         .run(),
//!     )
//! }
//! ```
//!
//! # The parts
//! - [`HubBuilder`] ([`Hub::builder`]): the bounds and policies, with the `switchboard`
//!   binary's defaults; the application's protocols ([`HubBuilder::protocol`]); which built-in
//!   protocols stay on; optionally static files and the operational endpoints.
//! - [`Hub::configure`]: mounts the hub into each worker's `App`.
//! - [`HubHandle`] ([`Hub::handle`]): publish, close, count, from the application's code.
//! - [`protocol`]: what a protocol author implements ([`protocol::Protocol`]) and uses
//!   ([`protocol::ProtocolCx`]).
//!
//! # One hub per process
//! The connection registry (one shard per worker thread), the metrics and the cluster's broker
//! are process-wide, so a process builds one hub ([`HubBuilder::build`] fails with
//! [`HubError::AlreadyBuilt`] the second time); clone it to mount it on several servers or
//! paths. The `switchboard` binary itself is built on this API (see its `server` module).

#![deny(missing_docs)]

mod access;
// Its doc comments are the `--help` text, written for a terminal, not for rustdoc.
#[doc(hidden)]
#[allow(rustdoc::invalid_html_tags, rustdoc::bare_urls)]
pub mod config;
mod config_file;
mod http;
mod hub;
#[doc(hidden)]
pub mod lifecycle;
#[doc(hidden)]
pub mod probe;
#[doc(hidden)]
pub mod server;
mod state;
mod tls;
#[doc(hidden)]
pub mod token_command;
mod units;
mod ws;

pub use access::origin::OriginPolicy;
pub use http::Endpoints;
pub use hub::{HandleError, Hub, HubBuilder, HubError, HubHandle};
pub use switchboard_actors::{
    access::token::KeyError, deflate::Compression, registry::broker::BrokerError,
    ProtocolSettings as BuiltinSettings, SlowConsumerPolicy,
};

/// What a protocol author needs: the trait to implement, what a connection can do, and what is
/// known about it.
///
/// A protocol sees whole messages (fragments reassembled, text checked as UTF-8); it never
/// touches sockets or threads. One value per connection is made by the factory given to
/// [`HubBuilder::protocol`](crate::HubBuilder::protocol); it lives on the worker thread of
/// its connection.
pub mod protocol {
    pub use switchboard_actors::{
        access::Identity,
        outbox::Delivery,
        protocol::{ConnectionInfo, Mailbox, Protocol, ProtocolCx, EXPIRY_NOTICE},
        Message, SessionId as ConnectionId,
    };
}

/// The parsers the fuzz targets in `fuzz/` drive; not an interface of the server.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::access::origin::OriginPolicy;
    pub use crate::config_file::apply_text as apply_config_text;
    pub use crate::http::byteranges::Multipart;
    pub use crate::http::file_body::{total_len, Segment};
    pub use crate::http::ranges::{plan as range_plan, ByteRange, RangePlan, MAX_PARTS};
    pub use crate::http::upload::{part_file_name, sanitize_file_name, MAX_NAME};
    pub use crate::units::{parse_bytes, parse_duration, parse_usize_bytes};
}
