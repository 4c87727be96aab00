//! The broker thread: one command connection and one subscription connection to Redis, kept
//! alive by reconnecting with backoff, resubscribing every channel this node is interested in,
//! and checking the subscription end to end (a connection can stay up and yet stop delivering:
//! a probe published to the node's own channel must come back within `--broker-check-interval`).
//!
//! It also keeps the node's presence (a key that expires unless refreshed) and reaps the nodes
//! whose presence expired: their chat members leave.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use actix::Recipient;
use actix_http::ws::OpCode;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::{aio::MultiplexedConnection, AsyncConnectionConfig};
use tokio::{sync::mpsc, time::timeout};

use super::{scripts, with_origin, Command, RedisSettings, SharedConnection, Stats};
use crate::{
    outbox::Frame,
    registry::{
        broker::{FeedEvent, RoomFeed},
        GroupKey,
    },
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for an answer from Redis; past it the connection is taken as lost.
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Reconnect attempts are at most this far apart, so a node is back within a second or two of
/// its broker.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Most broadcasts sent to Redis in one pipeline.
const MAX_BATCH: usize = 512;

/// Where the messages of a channel go on this node.
pub(super) enum Route {
    /// To the local members of a group, on every shard.
    Group(GroupKey),
    /// To the owner of this node's chat rooms.
    Chat {
        room: String,
        to: Recipient<RoomFeed>,
    },
}

struct Channel {
    interest: usize,
    route: Route,
    /// Subscribed at least once: after a reconnect, the chat owner must catch up.
    subscribed_once: bool,
}

/// The live connections.
struct Live {
    conn: MultiplexedConnection,
    sink: redis::aio::PubSubSink,
    stream: redis::aio::PubSubStream,
}

pub(super) struct Link {
    client: redis::Client,
    settings: RedisSettings,
    commands: mpsc::UnboundedReceiver<Command>,
    stats: Arc<Stats>,
    connection: SharedConnection,
    channels: HashMap<String, Channel>,
    probe_channel: String,
    chat_owner: Option<Recipient<RoomFeed>>,
}

/// Why a connection was given up.
type Lost = String;

impl Link {
    pub(super) fn new(
        client: redis::Client,
        settings: RedisSettings,
        commands: mpsc::UnboundedReceiver<Command>,
        stats: Arc<Stats>,
        connection: SharedConnection,
    ) -> Link {
        Link {
            client,
            probe_channel: scripts::probe_channel(&settings.node_id),
            settings,
            commands,
            stats,
            connection,
            channels: HashMap::new(),
            chat_owner: None,
        }
    }

    /// Runs the broker thread until the process ends.
    pub(super) fn run(self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime can always be built");
        runtime.block_on(self.serve_forever());
    }

    async fn serve_forever(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            match self.connect().await {
                Ok(live) => {
                    backoff = MIN_BACKOFF;
                    let lost = self.serve(live).await;
                    self.set_offline();
                    match lost {
                        Some(why) => self.stats.failed(&format!("connection lost: {why}")),
                        None => return,
                    }
                }
                Err(why) => self
                    .stats
                    .failed(&format!("cannot connect to {}: {why}", self.settings.url)),
            }
            if !self.wait_offline(backoff).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn connect(&mut self) -> Result<Live, String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|err| err.to_string())?;
        let pubsub = timeout(CONNECT_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|err| err.to_string())?;
        let (mut sink, stream) = pubsub.split();
        let mut names: Vec<&str> = self.channels.keys().map(String::as_str).collect();
        names.push(&self.probe_channel);
        timeout(RESPONSE_TIMEOUT * 5, sink.subscribe(&names))
            .await
            .map_err(|_| "subscribing timed out".to_owned())?
            .map_err(|err| err.to_string())?;
        self.heartbeat(&mut conn).await?;

        let again = self.stats.ever_connected.swap(true, Ordering::Relaxed);
        if again {
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        log::info!(
            "broker {} connected ({} channels subscribed)",
            self.settings.url,
            self.channels.len()
        );
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        self.stats.connected.store(true, Ordering::Relaxed);
        if again {
            if let Some(owner) = &self.chat_owner {
                owner.do_send(RoomFeed {
                    room: String::new(),
                    event: FeedEvent::Reconnected,
                });
            }
        }
        for channel in self.channels.values_mut() {
            if let Route::Chat { room, to } = &channel.route {
                to.do_send(RoomFeed {
                    room: room.clone(),
                    event: FeedEvent::Watching {
                        again: channel.subscribed_once,
                    },
                });
            }
            channel.subscribed_once = true;
        }
        Ok(Live { conn, sink, stream })
    }

    fn set_offline(&mut self) {
        self.stats.connected.store(false, Ordering::Relaxed);
        *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Serves a live connection until it is lost (`Some(why)`) or the process ends (`None`).
    async fn serve(&mut self, mut live: Live) -> Option<Lost> {
        let mut probe = tokio::time::interval(self.settings.check_interval);
        let mut heartbeat = tokio::time::interval(heartbeat_period(self.settings.presence_ttl));
        heartbeat.tick().await;
        let mut outstanding: Option<u64> = None;
        let mut next_probe = 0u64;
        loop {
            tokio::select! {
                command = self.commands.recv() => {
                    let command = command?;
                    if let Err(why) = self.online(command, &mut live).await {
                        return Some(why);
                    }
                }
                message = live.stream.next() => {
                    let Some(message) = message else {
                        return Some("the subscription connection closed".to_owned());
                    };
                    self.route(&message, &mut outstanding);
                }
                _ = probe.tick() => {
                    if outstanding.is_some() {
                        return Some(format!(
                            "subscription deaf: the probe did not come back within {:?}",
                            self.settings.check_interval
                        ));
                    }
                    next_probe += 1;
                    outstanding = Some(next_probe);
                    let sent: redis::RedisResult<()> = redis::cmd("PUBLISH")
                        .arg(&self.probe_channel)
                        .arg(next_probe)
                        .query_async(&mut live.conn)
                        .await;
                    if let Err(err) = sent {
                        return Some(format!("probe: {err}"));
                    }
                }
                _ = heartbeat.tick() => {
                    if let Err(why) = self.heartbeat(&mut live.conn).await {
                        return Some(why);
                    }
                }
            }
        }
    }

    /// Refreshes this node's presence and reaps nodes whose presence expired.
    async fn heartbeat(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let ttl = presence_key_ttl(self.settings.presence_ttl);
        let reaped: u64 = scripts::HEARTBEAT
            .arg(&self.settings.node_id)
            .arg(ttl.as_millis() as u64)
            .invoke_async(conn)
            .await
            .map_err(|err| format!("heartbeat: {err}"))?;
        if reaped > 0 {
            log::info!(
                "broker: {reaped} node(s) stopped refreshing their presence; their members left"
            );
        }
        Ok(())
    }

    /// A command while connected; an error means the connection is lost.
    async fn online(&mut self, command: Command, live: &mut Live) -> Result<(), Lost> {
        let mut next = Some(command);
        while let Some(command) = next.take() {
            match command {
                Command::Publish { channel, payload } => {
                    let mut pipe = redis::pipe();
                    pipe.publish(channel, payload.as_ref()).ignore();
                    let mut count = 1u64;
                    while count < MAX_BATCH as u64 {
                        match self.commands.try_recv() {
                            Ok(Command::Publish { channel, payload }) => {
                                pipe.publish(channel, payload.as_ref()).ignore();
                                count += 1;
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let sent: redis::RedisResult<()> = pipe.query_async(&mut live.conn).await;
                    if let Err(err) = sent {
                        self.stats.unrouted.fetch_add(count, Ordering::Relaxed);
                        return Err(format!("publish: {err}"));
                    }
                }
                Command::Interest { channel, route } => {
                    let Some(change) = self.count_interest(channel, route) else {
                        continue;
                    };
                    let done = match &change {
                        Subscription::Subscribe(name) => {
                            timeout(RESPONSE_TIMEOUT, live.sink.subscribe(name)).await
                        }
                        Subscription::Unsubscribe(name) => {
                            timeout(RESPONSE_TIMEOUT, live.sink.unsubscribe(name)).await
                        }
                    };
                    match done {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => return Err(format!("subscribe: {err}")),
                        Err(_) => return Err("subscribe: timed out".to_owned()),
                    }
                    if let Subscription::Subscribe(name) = change {
                        if let Some(channel) = self.channels.get_mut(&name) {
                            channel.subscribed_once = true;
                            if let Route::Chat { room, to } = &channel.route {
                                to.do_send(RoomFeed {
                                    room: room.clone(),
                                    event: FeedEvent::Watching { again: false },
                                });
                            }
                        }
                    }
                }
                Command::Retire { done } => {
                    let retired: redis::RedisResult<()> = scripts::RETIRE
                        .arg(&self.settings.node_id)
                        .invoke_async(&mut live.conn)
                        .await;
                    if let Err(err) = retired {
                        self.stats.failed(&format!("retire: {err}"));
                    }
                    let _ = done.send(());
                }
            }
        }
        Ok(())
    }

    /// Waits `period` before the next connection attempt, answering commands meanwhile; false
    /// when the process is ending.
    async fn wait_offline(&mut self, period: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + period;
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => return false,
                    Some(Command::Publish { .. }) => {
                        self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Command::Interest { channel, route }) => {
                        self.count_interest(channel, route);
                    }
                    Some(Command::Retire { done }) => {
                        let _ = done.send(());
                    }
                },
                () = tokio::time::sleep_until(deadline) => return true,
            }
        }
    }

    /// Counts a change of interest; says when the channel must be subscribed or unsubscribed.
    fn count_interest(&mut self, channel: String, route: Option<Route>) -> Option<Subscription> {
        let change = match route {
            Some(route) => {
                if let Route::Chat { to, .. } = &route {
                    self.chat_owner.get_or_insert_with(|| to.clone());
                }
                let entry = self.channels.entry(channel.clone()).or_insert(Channel {
                    interest: 0,
                    route,
                    subscribed_once: false,
                });
                entry.interest += 1;
                (entry.interest == 1).then_some(Subscription::Subscribe(channel))
            }
            None => {
                let entry = self.channels.get_mut(&channel)?;
                entry.interest = entry.interest.saturating_sub(1);
                if entry.interest == 0 {
                    self.channels.remove(&channel);
                    Some(Subscription::Unsubscribe(channel))
                } else {
                    None
                }
            }
        };
        self.stats
            .channels
            .store(self.channels.len() as u64, Ordering::Relaxed);
        change
    }

    /// Hands a message from the broker to where its channel goes on this node.
    fn route(&self, message: &redis::Msg, outstanding: &mut Option<u64>) {
        let name = message.get_channel_name();
        let payload = message.get_payload_bytes();
        if name == self.probe_channel {
            let probe = std::str::from_utf8(payload)
                .ok()
                .and_then(|text| text.parse::<u64>().ok());
            if probe.is_some() && probe == *outstanding {
                *outstanding = None;
            }
            return;
        }
        let Some(channel) = self.channels.get(name) else {
            return;
        };
        match &channel.route {
            Route::Group(key) => {
                if let Some(frame) = decode_broadcast(&self.settings.node_id, payload) {
                    crate::registry::deliver_from_broker(key, frame);
                }
            }
            Route::Chat { room, to } => to.do_send(RoomFeed {
                room: room.clone(),
                event: FeedEvent::Event(Bytes::copy_from_slice(payload)),
            }),
        }
    }
}

enum Subscription {
    Subscribe(String),
    Unsubscribe(String),
}

/// How often the node refreshes its presence: four times per `--presence-ttl`.
fn heartbeat_period(presence_ttl: Duration) -> Duration {
    (presence_ttl / 4).max(Duration::from_millis(100))
}

/// The presence key lives half the TTL: a dead node is noticed at most half a TTL after its
/// last refresh plus one refresh period of another node, within `--presence-ttl`.
fn presence_key_ttl(presence_ttl: Duration) -> Duration {
    (presence_ttl / 2).max(Duration::from_millis(200))
}

const TEXT: u8 = 1;
const BINARY: u8 = 2;

/// A broadcast as it travels through the broker: its origin node, its kind, its payload.
pub(super) fn encode_broadcast(origin: &str, frame: &Frame) -> Bytes {
    let kind = if frame.opcode == OpCode::Binary {
        BINARY
    } else {
        TEXT
    };
    with_origin(origin, kind, &frame.payload)
}

/// The frame of a broadcast from another node; `None` for this node's own (already delivered
/// here) and for anything malformed.
fn decode_broadcast(own: &str, payload: &[u8]) -> Option<Frame> {
    let (&origin_len, rest) = payload.split_first()?;
    let origin = rest.get(..usize::from(origin_len))?;
    if origin == own.as_bytes() {
        return None;
    }
    let (&kind, body) = rest.get(usize::from(origin_len)..)?.split_first()?;
    let opcode = match kind {
        TEXT => {
            std::str::from_utf8(body).ok()?;
            OpCode::Text
        }
        BINARY => OpCode::Binary,
        _ => return None,
    };
    Some(Frame::data(opcode, true, Bytes::copy_from_slice(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_round_trip_and_own_ones_are_skipped() {
        let frame = Frame::data(OpCode::Text, true, Bytes::from_static(b"hello"));
        let wire = encode_broadcast("node-a", &frame);
        assert!(decode_broadcast("node-a", &wire).is_none());
        let back = decode_broadcast("node-b", &wire).unwrap();
        assert_eq!(back.opcode, OpCode::Text);
        assert_eq!(&back.payload[..], b"hello");
        let binary = Frame::data(OpCode::Binary, true, Bytes::from_static(&[0xff, 0]));
        let back = decode_broadcast("x", &encode_broadcast("node-a", &binary)).unwrap();
        assert_eq!(back.opcode, OpCode::Binary);
        assert_eq!(&back.payload[..], &[0xff, 0]);
    }

    #[test]
    fn malformed_broadcasts_are_dropped() {
        assert!(decode_broadcast("n", b"").is_none());
        assert!(decode_broadcast("n", b"\x09ab").is_none());
        assert!(decode_broadcast("n", b"\x01a\x07x").is_none());
        assert!(decode_broadcast("n", b"\x01a\x01\xff").is_none());
    }

    #[test]
    fn a_dead_node_is_noticed_within_the_presence_ttl() {
        let ttl = Duration::from_secs(30);
        assert!(presence_key_ttl(ttl) + heartbeat_period(ttl) < ttl);
    }
}
