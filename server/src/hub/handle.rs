//! The application's side of a running hub: publish to a room, close a connection, read counts.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use bytestring::ByteString;
use switchboard_actors::{
    metrics::METRICS,
    outbox::Frame,
    protocol::{ProtocolSpec, Scope},
    protocols,
    registry::{self, broker::broker, GroupKey},
    Message, SessionId,
};

use super::HandleError;
use crate::state::ServerState;

/// Connections closed per worker per [`DRAIN_PERIOD`] by [`HubHandle::close_all`].
const DRAIN_BATCH: usize = 500;
const DRAIN_PERIOD: Duration = Duration::from_millis(20);

/// A handle to the hub for the application's own code (an HTTP handler, a background task).
///
/// It is cheap to clone and may be sent to any thread. The futures it returns are not `Send`:
/// await them on an actix-web worker (in a handler) or on the actix system's thread
/// (`actix_web::rt::spawn`).
#[derive(Clone)]
pub struct HubHandle {
    pub(crate) state: Arc<ServerState>,
}

impl HubHandle {
    /// Sends a text message to every member of a room of `protocol`, on every worker, and
    /// resolves to the connections it was queued for on this node. With a broker configured,
    /// the rooms of a cluster-wide protocol also get it on every other node, exactly like
    /// `POST /api/publish`. A protocol that owns its rooms' state (the built-in `chat`)
    /// delivers it itself (as a message from "server", kept in the room's history).
    ///
    /// The message is queued when this is called, not when the future is first polled, so
    /// messages published from one thread reach every member in the order they were published.
    pub fn publish(
        &self,
        protocol: &str,
        room: &str,
        text: impl Into<ByteString>,
    ) -> impl Future<Output = Result<usize, HandleError>> + 'static {
        let queued = spec(protocol).map(|spec| publish_to(spec, room, text.into()));
        async move { Ok(queued?.await) }
    }

    /// Closes a connection (by [`ConnectionInfo::id`](crate::protocol::ConnectionInfo::id)) with
    /// this close code and reason; its protocol's `on_close` runs as for any close. Resolves to
    /// whether a connection with this id was open on this node.
    pub fn close(
        &self,
        connection: SessionId,
        code: u16,
        reason: &str,
    ) -> impl Future<Output = Result<bool, HandleError>> + 'static {
        let checked =
            check_close(code, reason).map(|()| registry::close_session(connection, code, reason));
        async move { Ok(checked?.await) }
    }

    /// WebSocket connections open in this process, all protocols together.
    pub fn open_connections(&self) -> u64 {
        METRICS.sessions_open.get()
    }

    /// WebSocket connections of one protocol open in this process.
    pub fn protocol_connections(&self, protocol: &str) -> Result<u64, HandleError> {
        spec(protocol)?;
        let index = protocols::position(protocol).unwrap_or_default();
        Ok(METRICS.sessions_by_protocol[index].get())
    }

    /// The members a room of `protocol` has on this node, counted on every worker.
    pub fn room_members(
        &self,
        protocol: &str,
        room: &str,
    ) -> impl Future<Output = Result<usize, HandleError>> + 'static {
        let counted = spec(protocol).map(|spec| registry::group_size(&group(spec, room)));
        async move { Ok(counted?.await) }
    }

    /// The cap on WebSocket connections ([`HubBuilder::max_connections`](super::HubBuilder::max_connections)).
    pub fn max_connections(&self) -> usize {
        self.state.slots.max()
    }

    /// Closes every WebSocket connection with 1001 "going away", for a graceful shutdown: the
    /// readiness endpoint answers 503 from now on, a handshake completed afterwards is closed
    /// at once, and the connections are closed in batches (500 per worker every 20 ms) so
    /// that many clients do not reconnect at the same instant. Resolves when the last one has
    /// ended, or at `deadline`, to whether none is left; then, in a cluster, the node leaves
    /// the broker, so the other nodes see its members go now rather than at the presence TTL.
    ///
    /// Call it before stopping the application's `HttpServer` (whose graceful stop waits for
    /// open WebSockets, as for any request in progress).
    pub fn close_all(&self, deadline: Instant) -> impl Future<Output = bool> + 'static {
        self.state.start_draining();
        registry::drain_all(DRAIN_BATCH, DRAIN_PERIOD);
        async move {
            let deadline = tokio::time::Instant::from_std(deadline);
            // Woken by the last session's end, not polled.
            let none_left = tokio::time::timeout_at(deadline, METRICS.sessions_open.none_open())
                .await
                .is_ok();
            let _ = actix_web::rt::task::spawn_blocking(|| {
                broker().retire(Duration::from_secs(2));
            })
            .await;
            none_left
        }
    }

    /// Whether a graceful shutdown has begun (the readiness endpoint then answers 503).
    pub fn is_draining(&self) -> bool {
        self.state.is_draining()
    }
}

fn spec(name: &str) -> Result<&'static ProtocolSpec, HandleError> {
    protocols::find(name).ok_or_else(|| HandleError::UnknownProtocol {
        name: name.to_owned(),
        known: protocols::names(),
    })
}

fn group(spec: &ProtocolSpec, room: &str) -> GroupKey {
    GroupKey::scoped(spec.name, room, spec.scope == Scope::Cluster)
}

/// Delivers a message published from outside (this handle, `POST /api/publish`) to a room.
pub(crate) fn publish_to(
    spec: &'static ProtocolSpec,
    room: &str,
    text: ByteString,
) -> Pin<Box<dyn Future<Output = usize>>> {
    match spec.publish {
        // The protocol owns its rooms' state (chat: ids, history): it delivers.
        Some(deliver) => deliver(room, text),
        None => Box::pin(registry::publish_counted(
            &group(spec, room),
            Frame::message(&Message::Text(text)),
        )),
    }
}

/// The codes an endpoint may send (RFC 6455 §7.4.1; 1004-1006 and 1015 are reserved), and a
/// reason that fits a control frame with its code.
fn check_close(code: u16, reason: &str) -> Result<(), HandleError> {
    if !matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999) {
        return Err(HandleError::InvalidCloseCode(code));
    }
    if reason.len() > 123 {
        return Err(HandleError::ReasonTooLong(reason.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_follow_rfc_6455() {
        for code in [1000, 1001, 1008, 1011, 3000, 4000, 4999] {
            assert_eq!(check_close(code, "bye"), Ok(()), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 2000, 2999, 5000] {
            assert_eq!(
                check_close(code, ""),
                Err(HandleError::InvalidCloseCode(code)),
                "{code}"
            );
        }
        assert_eq!(check_close(4000, &"x".repeat(123)), Ok(()));
        assert_eq!(
            check_close(4000, &"x".repeat(124)),
            Err(HandleError::ReasonTooLong(124))
        );
    }
}
