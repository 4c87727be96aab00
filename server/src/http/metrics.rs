//! Prometheus metrics: the WebSocket core's counters and HTTP requests by status.
//!
//! The counters on the message path are plain relaxed atomics (`switchboard_actors::metrics`);
//! this collector reads them at scrape time and prometheus-client writes the exposition format.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use actix_web::{http::StatusCode, web, HttpResponse};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::Registry,
};
use switchboard_actors::{
    metrics::METRICS,
    protocols,
    registry::broker::{broker, node_id},
};

use crate::state::ServerState;

/// Status codes counted one by one; any other is counted as "other".
const COUNTED_STATUSES: [u16; 19] = [
    101, 200, 204, 206, 301, 304, 400, 403, 404, 405, 408, 412, 413, 416, 426, 431, 500, 503, 505,
];

static HTTP_RESPONSES: [AtomicU64; COUNTED_STATUSES.len() + 1] =
    [const { AtomicU64::new(0) }; COUNTED_STATUSES.len() + 1];

/// Counts one HTTP response by its status.
pub fn record_response(status: StatusCode) {
    let index = COUNTED_STATUSES
        .iter()
        .position(|&code| code == status.as_u16())
        .unwrap_or(COUNTED_STATUSES.len());
    HTTP_RESPONSES[index].fetch_add(1, Ordering::Relaxed);
}

/// The hub's metrics registry (a type of this crate, so that an application's own
/// `web::Data<Registry>` is another item of its app data).
pub struct MetricsRegistry(Registry);

/// The registry, built once at start-up.
pub fn registry(state: Arc<ServerState>) -> MetricsRegistry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SwitchboardCollector { state }));
    MetricsRegistry(registry)
}

/// `GET /metrics`.
pub async fn scrape(registry: web::Data<MetricsRegistry>) -> HttpResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry.0) {
        Ok(()) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(text),
        Err(_) => HttpResponse::InternalServerError().body("metrics could not be encoded\n"),
    }
}

#[derive(Debug)]
struct SwitchboardCollector {
    state: Arc<ServerState>,
}

impl fmt::Debug for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerState").finish_non_exhaustive()
    }
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A family of counters with one label (`label="value"` per member).
fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    members: impl IntoIterator<Item = (String, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in members {
        ConstCounter::new(count).encode(family.encode_family(&vec![(label, value.as_str())])?)?;
    }
    Ok(())
}

/// A family of gauges with one label.
fn gauge_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    members: impl IntoIterator<Item = (String, u64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (value, level) in members {
        let level = i64::try_from(level).unwrap_or(i64::MAX);
        ConstGauge::new(level).encode(family.encode_family(&vec![(label, value.as_str())])?)?;
    }
    Ok(())
}

impl Collector for SwitchboardCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let e = &mut encoder;
        gauge_family(
            e,
            "switchboard_websocket_connections",
            "Open WebSocket connections by protocol",
            "protocol",
            protocols::installed()
                .iter()
                .enumerate()
                .map(|(index, spec)| {
                    (
                        spec.name.to_owned(),
                        METRICS.sessions_by_protocol[index].get(),
                    )
                }),
        )?;
        gauge(
            e,
            "switchboard_websocket_connections_max",
            "WebSocket session cap",
            self.state.slots.max() as u64,
        )?;
        counter(
            e,
            "switchboard_websocket_connections_opened",
            "WebSocket connections opened",
            METRICS.sessions_opened.get(),
        )?;
        counter(
            e,
            "switchboard_websocket_connections_refused",
            "Upgrades refused at the session cap",
            METRICS.sessions_refused.get(),
        )?;
        counter_family(
            e,
            "switchboard_websocket_handshakes_refused",
            "Upgrades refused by access control (origin, token, room)",
            "reason",
            [
                ("origin".to_owned(), METRICS.refused_origin.get()),
                ("token".to_owned(), METRICS.refused_token.get()),
                ("room".to_owned(), METRICS.refused_room.get()),
            ],
        )?;
        counter(
            e,
            "switchboard_websocket_messages_received",
            "Whole messages received",
            METRICS.messages_in.get(),
        )?;
        counter(
            e,
            "switchboard_websocket_received_bytes",
            "Payload bytes of messages received",
            METRICS.bytes_in.get(),
        )?;
        counter(
            e,
            "switchboard_websocket_messages_sent",
            "Data messages written to sockets",
            METRICS.messages_out.get(),
        )?;
        counter(
            e,
            "switchboard_websocket_sent_bytes",
            "Bytes written to WebSocket sockets",
            METRICS.bytes_out.get(),
        )?;
        counter(
            e,
            "switchboard_broadcasts",
            "Broadcasts (one per message sent to a group)",
            METRICS.broadcasts.get(),
        )?;
        counter(
            e,
            "switchboard_broadcast_deliveries",
            "Broadcast messages queued for a member",
            METRICS.broadcast_deliveries.get(),
        )?;
        counter_family(
            e,
            "switchboard_slow_consumer_actions",
            "Slow-consumer policy actions (close: connections closed; drop: messages skipped)",
            "action",
            [
                ("close".to_owned(), METRICS.slow_consumer_closes.get()),
                ("drop".to_owned(), METRICS.slow_consumer_drops.get()),
            ],
        )?;
        counter(
            e,
            "switchboard_sockets_killed",
            "Stuck connections ended at the socket",
            METRICS.sockets_killed.get(),
        )?;
        counter_family(
            e,
            "switchboard_close_codes_sent",
            "WebSocket close frames sent, by code",
            "code",
            METRICS
                .close_codes()
                .map(|(code, count)| (code.to_string(), count))
                .chain([("other".to_owned(), METRICS.close_codes_other.get())]),
        )?;
        counter_family(
            e,
            "switchboard_http_responses",
            "HTTP responses by status code",
            "status",
            HTTP_RESPONSES.iter().enumerate().map(|(index, counted)| {
                let status = COUNTED_STATUSES
                    .get(index)
                    .map_or_else(|| "other".to_owned(), u16::to_string);
                (status, counted.load(Ordering::Relaxed))
            }),
        )?;
        gauge(
            e,
            "switchboard_draining",
            "1 while a graceful shutdown is under way",
            self.state.is_draining() as u64,
        )?;
        gauge(
            e,
            "switchboard_file_descriptor_limit",
            "RLIMIT_NOFILE in force",
            self.state.fd_limit,
        )?;
        gauge_family(
            e,
            "switchboard_node",
            "This node's id in the cluster (--node-id), as a label; the value is always 1",
            "node_id",
            [(node_id().to_owned(), 1)],
        )?;
        let Some(broker) = broker().status() else {
            return Ok(());
        };
        gauge(
            e,
            "switchboard_broker_connected",
            "1 while the cluster's broker is connected",
            u64::from(broker.connected),
        )?;
        counter(
            e,
            "switchboard_broker_reconnects",
            "Connections to the broker made again after a loss",
            broker.reconnects,
        )?;
        counter(
            e,
            "switchboard_broker_publish_failures",
            "Broker commands that failed (publishes, chat steps, heartbeats)",
            broker.publish_failures,
        )?;
        counter(
            e,
            "switchboard_broker_unrouted",
            "Broadcasts delivered on this node that could not reach the other nodes",
            broker.unrouted,
        )?;
        gauge(
            e,
            "switchboard_broker_channels",
            "Broker channels this node subscribes to (rooms with members here)",
            broker.channels,
        )
    }
}
