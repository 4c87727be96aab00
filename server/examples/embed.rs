//! An actix-web application with Switchboard inside: a route of its own (`GET /hello`), the
//! WebSocket hub on `/ws` with a protocol of its own (`room-counter`) beside the built-in `echo`
//! (the other built-ins are off), the liveness and status endpoints, and routes that use the
//! hub's handle: `POST /announce/{room}` publishes its body to a room, `POST /kick/{id}` closes
//! a connection, `GET /rooms/{room}` counts a room's members.
//!
//! Run it with `cargo run --release --example embed` (the address: `EMBED_BIND`, default
//! `127.0.0.1:8080`; port 0 picks a free one). It prints `listening on ADDR` on stderr.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::json;
use switchboard::{
    protocol::{ConnectionInfo, Message, Protocol, ProtocolCx},
    Endpoints, Hub, HubHandle,
};

/// How many connections each room has, shared by every connection on every worker.
type Counts = Arc<Mutex<HashMap<String, usize>>>;

/// `room-counter`: joins the room named by `?room=` (default `lobby`), tells the new
/// connection its id (`{"id": N}`), and tells the whole room how many are connected
/// (`{"room": R, "connected": N}`) whenever someone joins or leaves. A message is answered
/// with the room's count.
struct RoomCounter {
    room: String,
    counts: Counts,
}

impl RoomCounter {
    fn new(info: &ConnectionInfo, counts: Counts) -> RoomCounter {
        let room = info
            .query_param("room")
            .filter(|room| !room.is_empty())
            .unwrap_or_else(|| "lobby".to_owned());
        RoomCounter { room, counts }
    }

    /// Adds `change` to the room's count and returns the new count.
    fn count(&self, change: isize) -> usize {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let count = counts.entry(self.room.clone()).or_default();
        *count = count.saturating_add_signed(change);
        let now = *count;
        if now == 0 {
            counts.remove(&self.room);
        }
        now
    }

    fn tell_room(&self, cx: &mut ProtocolCx<'_>, connected: usize) {
        let text = json!({ "room": self.room, "connected": connected }).to_string();
        cx.broadcast(&self.room, &Message::Text(text.into()));
    }
}

impl Protocol for RoomCounter {
    fn on_open(&mut self, cx: &mut ProtocolCx<'_>) {
        cx.send_text(json!({ "id": cx.info().id }).to_string());
        cx.join(&self.room);
        let connected = self.count(1);
        self.tell_room(cx, connected);
    }

    fn on_message(&mut self, cx: &mut ProtocolCx<'_>, _message: Message) {
        let connected = self.count(0);
        cx.send_text(json!({ "room": self.room, "connected": connected }).to_string());
    }

    fn on_close(&mut self, cx: &mut ProtocolCx<'_>) {
        cx.leave(&self.room);
        let connected = self.count(-1);
        self.tell_room(cx, connected);
    }
}

async fn hello() -> HttpResponse {
    HttpResponse::Ok().body("hello from the application\n")
}

/// Publishes the request body to a `room-counter` room, through the hub's handle.
async fn announce(
    hub: web::Data<HubHandle>,
    room: web::Path<String>,
    body: String,
) -> HttpResponse {
    match hub.publish("room-counter", &room, body).await {
        Ok(reached) => HttpResponse::Ok().json(json!({ "reached": reached })),
        Err(err) => HttpResponse::BadRequest().body(format!("{err}\n")),
    }
}

/// Closes a connection with 4000 "kicked".
async fn kick(hub: web::Data<HubHandle>, id: web::Path<u64>) -> HttpResponse {
    match hub.close(*id, 4000, "kicked").await {
        Ok(true) => HttpResponse::Ok().body("closed\n"),
        Ok(false) => HttpResponse::NotFound().body("no such connection\n"),
        Err(err) => HttpResponse::BadRequest().body(format!("{err}\n")),
    }
}

/// A room's members and the connections open in all.
async fn room(hub: web::Data<HubHandle>, room: web::Path<String>) -> HttpResponse {
    match hub.room_members("room-counter", &room).await {
        Ok(members) => HttpResponse::Ok().json(json!({
            "members": members,
            "open": hub.open_connections(),
        })),
        Err(err) => HttpResponse::BadRequest().body(format!("{err}\n")),
    }
}

fn main() -> std::io::Result<()> {
    let bind = std::env::var("EMBED_BIND").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let counts = Counts::default();
    let hub = Hub::builder()
        .builtin_protocols(&["echo"])
        .protocol("room-counter", move |info| {
            RoomCounter::new(info, counts.clone())
        })
        .max_backlog(256 * 1024)
        .endpoints(Endpoints {
            health: Some("/healthz".to_owned()),
            ready: None,
            status: Some("/ws-status".to_owned()),
            metrics: None,
        })
        .build()
        .map_err(std::io::Error::other)?;
    let handle = web::Data::new(hub.handle());

    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            App::new()
                .app_data(handle.clone())
                .route("/hello", web::get().to(hello))
                .route("/announce/{room}", web::post().to(announce))
                .route("/kick/{id}", web::post().to(kick))
                .route("/rooms/{room}", web::get().to(room))
                .configure(hub.configure("/ws"))
        })
        .workers(2)
        .bind(&bind)?;
        for addr in server.addrs() {
            eprintln!("embed example listening on {addr}");
        }
        server.run().await
    })
}
