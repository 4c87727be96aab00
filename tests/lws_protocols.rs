//! The libwebsockets test protocols as a client sees them: `dumb-increment-protocol` (a counter,
//! `reset\n`, `closeme\n`) and `lws-status` (the list of live connections, pushed on changes).

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::{ws_client::Ws, Server};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{
    client::IntoClientRequest, http::HeaderValue, protocol::frame::coding::CloseCode, Message,
};

/// Connects offering `protocol`, with a user agent the status list can show.
async fn connect(server: &Server, protocol: &str, user_agent: &str) -> Ws {
    let mut request = server.ws_url("/").into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(protocol).unwrap(),
    );
    headers.insert("User-Agent", HeaderValue::from_str(user_agent).unwrap());
    let (ws, _) = timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    ws
}

/// The next text message (control frames skipped), within 5 s.
async fn next_text(ws: &mut Ws) -> String {
    loop {
        match timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

async fn next_number(ws: &mut Ws) -> u64 {
    let text = next_text(ws).await;
    text.parse()
        .unwrap_or_else(|_| panic!("a counter, got {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dumb_increment_counts_resets_and_closes_on_request() {
    let server = Server::start(&["--increment-interval", "20ms"]);
    let mut ws = connect(&server, "dumb-increment-protocol", "counter-test").await;

    let mut numbers = Vec::new();
    for _ in 0..10 {
        numbers.push(next_number(&mut ws).await);
    }
    assert_eq!(
        numbers,
        (0..10).collect::<Vec<_>>(),
        "starts at 0, one by one"
    );

    // A command without its newline is not a command (libwebsockets matches "reset\n").
    ws.send(Message::text("reset")).await.unwrap();
    let after = next_number(&mut ws).await;
    assert!(after >= 10, "`reset` without newline is ignored: {after}");

    ws.send(Message::text("reset\n")).await.unwrap();
    let mut reset_seen = false;
    for _ in 0..50 {
        if next_number(&mut ws).await < 5 {
            reset_seen = true;
            break;
        }
    }
    assert!(reset_seen, "the counter restarted from 0 after reset");

    ws.send(Message::text("closeme\n")).await.unwrap();
    let close = loop {
        match timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close code"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.code, CloseCode::Away);
    assert_eq!(close.reason, "seeya");
}

/// Finds a connection with this user agent in a status document.
fn listed<'a>(status: &'a Value, user_agent: &str) -> Option<&'a Value> {
    status["conns"]
        .as_array()
        .expect("conns")
        .iter()
        .find(|conn| conn["ua"] == user_agent)
}

/// Reads status documents until one satisfies `check` (the list is pushed at most every
/// 250 ms, so a change may take a document or two to show).
async fn status_until(ws: &mut Ws, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..20 {
        let status: Value = serde_json::from_str(&next_text(ws).await).expect("JSON");
        if check(&status) {
            return status;
        }
    }
    panic!("no status document showed the change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lws_status_lists_connections_and_pushes_changes() {
    let server = Server::start(&["--workers", "2"]);
    let mut watcher = connect(&server, "lws-status", "status-watcher").await;

    // On open: a document that lists the watcher itself, in libwebsockets' field names.
    let status: Value = serde_json::from_str(&next_text(&mut watcher).await).unwrap();
    let me = listed(&status, "status-watcher").expect("the watcher is listed");
    assert_eq!(me["protocol"], "lws-status");
    assert!(
        me["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{me}"
    );
    let since: u64 = me["time"].as_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        since <= now && now - since < 60,
        "connected since {since}, now {now}"
    );
    assert!(status["version"]
        .as_str()
        .unwrap()
        .starts_with("switchboard"));

    // A new connection of another protocol is pushed, then its departure.
    let other = connect(&server, "echo", "passer-by").await;
    let status = status_until(&mut watcher, |s| listed(s, "passer-by").is_some()).await;
    assert_eq!(listed(&status, "passer-by").unwrap()["protocol"], "echo");
    assert_eq!(status["total"], 2);
    drop(other);
    let status = status_until(&mut watcher, |s| listed(s, "passer-by").is_none()).await;
    assert_eq!(status["total"], 1);

    // A burst of connections is rate-limited into a few documents, not one each.
    let mut burst = Vec::new();
    for index in 0..30 {
        burst.push(connect(&server, "echo", &format!("burst-{index}")).await);
    }
    let mut documents = 0;
    let status = loop {
        let status: Value = serde_json::from_str(&next_text(&mut watcher).await).unwrap();
        documents += 1;
        if status["total"] == 31 {
            break status;
        }
    };
    assert!(documents < 30, "{documents} documents for 30 connections");
    assert!(listed(&status, "burst-29").is_some());
}
