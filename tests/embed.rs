//! Switchboard inside another program: the `embed` example (server/examples/embed.rs), an
//! actix-web application of its own with the hub mounted on `/ws`, a protocol of its own
//! (`room-counter`), only the `echo` built-in on, and routes that use the hub's handle. The
//! example runs as its own process, as a user would run it; `cargo test` builds it (examples
//! are built with the package's tests).

mod support;

use std::{path::PathBuf, process::Command, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::{ws_client::Ws, Server};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{
    client::IntoClientRequest, http::HeaderValue, protocol::frame::coding::CloseCode, Error,
    Message,
};

const STEP: Duration = Duration::from_secs(10);

/// The example's binary, beside the server's (`target/<profile>/examples/embed`).
fn example_path() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_switchboard"));
    let path = bin
        .parent()
        .expect("the binary's directory")
        .join("examples")
        .join("embed");
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples; with `--test embed` alone, add \
         `--example embed` (or run `cargo build --release --example embed` first)",
        path.display()
    );
    path
}

fn start_example() -> Server {
    let mut command = Command::new(example_path());
    command.env("EMBED_BIND", "127.0.0.1:0");
    Server::start_command(command)
}

async fn get(server: &Server, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(server.http_url(path))
        .timeout(STEP)
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

async fn post(server: &Server, path: &str, body: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(server.http_url(path))
        .body(body.to_owned())
        .timeout(STEP)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Opens a WebSocket on `path` offering `protocol`; the handshake's error if it is refused.
async fn connect(server: &Server, path: &str, protocol: &str) -> Result<Ws, Error> {
    let mut request = server.ws_url(path).into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).unwrap(),
    );
    timeout(STEP, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake within the step")
        .map(|(ws, _)| ws)
}

/// The next text message, as JSON (pings and pongs skipped).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match timeout(STEP, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).expect("JSON text");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Joins a room of `room-counter`; returns the connection and its id, after its own count.
async fn join(server: &Server, room: &str, expect_connected: u64) -> (Ws, u64) {
    let mut ws = connect(server, &format!("/ws?room={room}"), "room-counter")
        .await
        .expect("room-counter is served on /ws");
    let id = next_json(&mut ws).await["id"]
        .as_u64()
        .expect("its id first");
    assert_eq!(
        next_json(&mut ws).await,
        serde_json::json!({ "room": room, "connected": expect_connected })
    );
    (ws, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_keeps_its_routes_beside_the_hub() {
    let server = start_example();
    assert_eq!(
        get(&server, "/hello").await,
        (200, "hello from the application\n".to_owned())
    );
    // /ws without an upgrade is the application's (it has no such route).
    assert_eq!(get(&server, "/ws").await.0, 404);
    // The endpoints it switched on, at its paths; the ones it left off are not there.
    assert_eq!(get(&server, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(&server, "/metrics").await.0, 404);
    assert_eq!(get(&server, "/readyz").await.0, 404);
    let (status, body) = get(&server, "/ws-status").await;
    assert_eq!(status, 200);
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["connections"]["by_protocol"],
        serde_json::json!({ "echo": 0, "room-counter": 0 })
    );
    // No static files were asked for.
    assert_eq!(get(&server, "/index.html").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_protocol_counts_each_room() {
    let server = start_example();
    let (mut ann, _) = join(&server, "red", 1).await;
    let (mut bob, _) = join(&server, "red", 2).await;
    assert_eq!(
        next_json(&mut ann).await,
        serde_json::json!({ "room": "red", "connected": 2 })
    );
    // Another room has a count of its own, and its news stays in it.
    let (mut cid, _) = join(&server, "blue", 1).await;
    bob.close(None).await.expect("close");
    assert_eq!(
        next_json(&mut ann).await,
        serde_json::json!({ "room": "red", "connected": 1 })
    );
    // A message is answered with the count: nothing from "blue" came before it.
    cid.send(Message::Text("count?".into())).await.unwrap();
    assert_eq!(
        next_json(&mut cid).await,
        serde_json::json!({ "room": "blue", "connected": 1 })
    );
    ann.send(Message::Text("count?".into())).await.unwrap();
    assert_eq!(
        next_json(&mut ann).await,
        serde_json::json!({ "room": "red", "connected": 1 })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_ins_switched_off_are_refused_and_echo_stays() {
    let server = start_example();
    for protocol in [
        "lws-mirror-protocol",
        "dumb-increment-protocol",
        "chat",
        "lws-status",
    ] {
        match connect(&server, "/ws", protocol).await {
            Err(Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 400, "{protocol}");
                let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned();
                assert!(
                    body.contains("this server speaks: echo, room-counter"),
                    "{protocol}: {body}"
                );
            }
            Ok(_) => panic!("{protocol} is switched off but was accepted"),
            Err(other) => panic!("{protocol}: {other}"),
        }
    }
    let mut echo = connect(&server, "/ws", "echo")
        .await
        .expect("echo stays on");
    echo.send(Message::Text("still here".into())).await.unwrap();
    match timeout(STEP, echo.next()).await.expect("the echo in time") {
        Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), "still here"),
        other => panic!("expected the echo, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handle_publishes_counts_and_closes() {
    let server = start_example();
    let (mut ann, ann_id) = join(&server, "news", 1).await;
    let (mut bob, bob_id) = join(&server, "news", 2).await;
    assert_eq!(next_json(&mut ann).await["connected"], 2);

    let (status, body) = post(&server, "/announce/news", r#"{"headline":"hi"}"#).await;
    assert_eq!((status, body.as_str()), (200, r#"{"reached":2}"#));
    for ws in [&mut ann, &mut bob] {
        assert_eq!(next_json(ws).await, serde_json::json!({ "headline": "hi" }));
    }
    let (_, body) = post(&server, "/announce/elsewhere", "{}").await;
    assert_eq!(body, r#"{"reached":0}"#);

    let (_, body) = get(&server, "/rooms/news").await;
    let counts: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(counts, serde_json::json!({ "members": 2, "open": 2 }));

    assert_eq!(
        post(&server, &format!("/kick/{bob_id}"), "").await,
        (200, "closed\n".to_owned())
    );
    loop {
        match timeout(STEP, bob.next()).await.expect("the close in time") {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, CloseCode::Library(4000));
                assert_eq!(frame.reason.as_str(), "kicked");
                break;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected the close frame, got {other:?}"),
        }
    }
    // The kicked connection left its room: the others are told.
    assert_eq!(
        next_json(&mut ann).await,
        serde_json::json!({ "room": "news", "connected": 1 })
    );
    let unknown = ann_id.max(bob_id) + 1000;
    assert_eq!(post(&server, &format!("/kick/{unknown}"), "").await.0, 404);
}
