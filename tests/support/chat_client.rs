//! A client of the `chat` protocol (`tokio-tungstenite`): JSON requests out, JSON events in,
//! each wait bounded.

use std::{net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue, Message};

use super::ws_client::Ws;

/// How long one expected event may take.
pub const ANSWER: Duration = Duration::from_secs(10);

/// One chat connection.
pub struct ChatClient {
    pub ws: Ws,
}

impl ChatClient {
    /// Connects to the server at `addr` offering `chat`.
    pub async fn connect(addr: SocketAddr) -> ChatClient {
        ChatClient::connect_path(addr, "/").await
    }

    /// Connects to `path` (e.g. `/?token=JWT`) offering `chat`.
    pub async fn connect_path(addr: SocketAddr, path: &str) -> ChatClient {
        let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("chat"));
        let (ws, response) = timeout(ANSWER, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
            .expect("connect");
        assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
        ChatClient { ws }
    }

    pub async fn send(&mut self, request: Value) {
        self.send_text(&request.to_string()).await;
    }

    /// Sends any text, valid request or not.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Asserts that no event arrives for a while.
    pub async fn expect_silence(&mut self, how_long: Duration) {
        if let Some(event) = self.next_within(how_long).await {
            panic!("expected nothing, got {event}");
        }
    }

    /// Says something and waits for it to come back: proof the connection works.
    pub async fn assert_usable(&mut self, room: &str) {
        self.say(room, "still here").await;
        let event = self.next_message(room).await;
        assert_eq!(event["text"], "still here");
    }

    /// The next event within `limit` (pings and pongs skipped); `None` if none came.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Some(serde_json::from_str(&text).expect("events are JSON"))
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(other) => panic!("expected an event, got {other:?}"),
            }
        }
    }

    /// The next event (pings and pongs skipped), within [`ANSWER`].
    pub async fn next(&mut self) -> Value {
        self.next_within(ANSWER)
            .await
            .expect("an event within 10 s")
    }

    /// The next event of a type, skipping the others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let event = self.next().await;
            if event["type"] == kind {
                return event;
            }
        }
    }

    /// The next event of a type in a room, skipping the others, within `limit`; `None` if
    /// none came.
    pub async fn next_in_room_within(
        &mut self,
        kind: &str,
        room: &str,
        limit: Duration,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next_within(left).await?;
            if event["type"] == kind && event["room"] == room {
                return Some(event);
            }
        }
    }

    /// The next `message` event of a room (presence and other events skipped).
    pub async fn next_message(&mut self, room: &str) -> Value {
        self.next_in_room_within("message", room, ANSWER)
            .await
            .unwrap_or_else(|| panic!("a message in {room} within {ANSWER:?}"))
    }

    /// The next `presence` event of a room within `limit`.
    pub async fn next_presence_within(&mut self, room: &str, limit: Duration) -> Option<Value> {
        self.next_in_room_within("presence", room, limit).await
    }

    /// The next event, which must be an error with this code.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let event = self.next().await;
        assert_eq!(event["type"], "error", "expected error {code}, got {event}");
        assert_eq!(event["code"], code, "{event}");
        assert!(
            !event["message"].as_str().unwrap_or_default().is_empty(),
            "errors explain themselves: {event}"
        );
        event
    }

    /// Sends a join and returns `joined`, checking the rule clients rely on: events of the room
    /// that arrive before its `joined` are older than it (they are contained in it).
    pub async fn join_with(&mut self, request: Value) -> Value {
        let room = request["room"].clone();
        self.send(request).await;
        let mut early_ids = Vec::new();
        loop {
            let event = self.next().await;
            if event["type"] == "error" {
                panic!("join of {room} refused: {event}");
            }
            if event["room"] != room {
                continue;
            }
            match event["type"].as_str().unwrap_or_default() {
                "joined" => {
                    let last_id = event["last_id"].as_u64().expect("joined has last_id");
                    assert!(
                        early_ids.iter().all(|id| *id <= last_id),
                        "messages {early_ids:?} came before joined {event}"
                    );
                    return event;
                }
                "message" => early_ids.push(event["id"].as_u64().unwrap()),
                _ => {}
            }
        }
    }

    pub async fn join(&mut self, room: &str, nick: &str) -> Value {
        self.join_with(json!({"type": "join", "room": room, "nick": nick}))
            .await
    }

    pub async fn leave(&mut self, room: &str) {
        self.send(json!({"type": "leave", "room": room})).await;
        self.next_in_room_within("left", room, ANSWER)
            .await
            .unwrap_or_else(|| panic!("left {room} within {ANSWER:?}"));
    }

    pub async fn say(&mut self, room: &str, text: &str) {
        self.send(json!({"type": "say", "room": room, "text": text}))
            .await;
    }

    /// Closes the connection with a close handshake.
    pub async fn close(mut self) {
        let _ = timeout(ANSWER, self.ws.close(None)).await;
        // Read to the end so the close completes.
        let _ = timeout(ANSWER, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// A message event's id.
pub fn id(event: &Value) -> u64 {
    event["id"].as_u64().expect("an id")
}

/// The texts of a list of message events.
pub fn texts(events: &Value) -> Vec<&str> {
    events
        .as_array()
        .expect("a list")
        .iter()
        .map(|event| event["text"].as_str().unwrap())
        .collect()
}

/// A `members` list as sorted nicks.
pub fn sorted_members(joined: &Value) -> Vec<String> {
    let mut members: Vec<String> = joined["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|nick| nick.as_str().unwrap().to_owned())
        .collect();
    members.sort();
    members
}
