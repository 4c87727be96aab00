//! `GET /status`: the server's state as JSON, for people and dashboards.

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};
use switchboard_actors::{
    metrics::METRICS,
    protocols,
    registry::broker::{broker, node_id},
};

use crate::state::ServerState;

pub async fn status(state: web::Data<ServerState>) -> HttpResponse {
    let by_protocol: Map<String, Value> = protocols::installed()
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let open = METRICS.sessions_by_protocol[index].get();
            (spec.name.to_owned(), json!(open))
        })
        .collect();
    let broker = broker().status().map(|status| {
        json!({
            "url": status.url,
            "connected": status.connected,
            "reconnects": status.reconnects,
            "publish_failures": status.publish_failures,
            "unrouted": status.unrouted,
            "last_error": status.last_error,
            "channels": status.channels,
        })
    });
    HttpResponse::Ok().json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "node_id": node_id(),
        "broker": broker,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "draining": state.is_draining(),
        "workers": state.workers,
        "file_descriptor_limit": state.fd_limit,
        "connections": {
            "open": METRICS.sessions_open.get(),
            "max": state.slots.max(),
            "by_protocol": by_protocol,
            "opened": METRICS.sessions_opened.get(),
            "refused": METRICS.sessions_refused.get(),
        },
        "messages": {
            "received": METRICS.messages_in.get(),
            "received_bytes": METRICS.bytes_in.get(),
            "sent": METRICS.messages_out.get(),
            "sent_bytes": METRICS.bytes_out.get(),
            "broadcasts": METRICS.broadcasts.get(),
            "broadcast_deliveries": METRICS.broadcast_deliveries.get(),
        },
        "slow_consumers": {
            "closed": METRICS.slow_consumer_closes.get(),
            "dropped_messages": METRICS.slow_consumer_drops.get(),
        },
    }))
}
