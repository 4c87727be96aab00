//! Interoperability with libwebsockets' reference test programs (Debian's
//! `libwebsockets-test-server` package): their client against Switchboard, and a client of ours
//! against their server, on the protocols both speak.
//!
//! Without the package these tests say so and pass, unless `SWITCHBOARD_REQUIRE_LWS=1` (set by
//! CI, which installs the package) makes a missing program a failure.

mod support;

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use support::Server;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

const LWS_CLIENT: &str = "/usr/bin/libwebsockets-test-client";
const LWS_SERVER: &str = "/usr/bin/libwebsockets-test-server";

/// Whether the libwebsockets programs are installed; fails if CI requires them.
fn lws_available() -> bool {
    let present =
        std::path::Path::new(LWS_CLIENT).exists() && std::path::Path::new(LWS_SERVER).exists();
    if !present {
        assert!(
            std::env::var("SWITCHBOARD_REQUIRE_LWS").as_deref() != Ok("1"),
            "libwebsockets-test-server package is required but not installed"
        );
        eprintln!("libwebsockets test programs not installed; interop not checked");
    }
    present
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, protocol: &str) -> Socket {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        protocol
    );
    socket
}

async fn next_text(socket: &mut Socket) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// `libwebsockets-test-client` opens a dumb-increment and a mirror connection to Switchboard:
/// it must log the counter it receives, and its drawing commands must reach another member of
/// the default mirror instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libwebsockets_test_client_talks_to_switchboard() {
    if !lws_available() {
        return;
    }
    let server = Server::start(&["--workers", "2"]);
    let mut observer = connect(&server.ws_url("/"), "lws-mirror-protocol").await;

    // Its log goes to a file: it logs every write, and a full pipe would stall it.
    let log_path = std::env::temp_dir().join(format!("lws-client-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut client = Command::new(LWS_CLIENT)
        .args([
            "127.0.0.1".to_string(),
            format!("--port={}", server.addr.port()),
            "-d".into(),
            "15".into(),
        ])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start libwebsockets-test-client");

    // Drawing commands from the libwebsockets client, as the observer sees them.
    let mut circles = Vec::new();
    while circles.len() < 20 {
        let text = next_text(&mut observer).await;
        circles.push(text);
    }
    // Let the counter run for a while, then stop the client (by its PID).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.kill().unwrap();
    client.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    std::fs::remove_file(&log_path).ok();

    for circle in &circles {
        let fields: Vec<&str> = circle.trim_end_matches(';').split(' ').collect();
        assert_eq!(fields.len(), 5, "a circle command: {circle:?}");
        assert_eq!(fields[0], "c");
        assert!(
            fields[1].starts_with('#') && fields[1].len() == 7,
            "{circle:?}"
        );
        assert!(
            fields[2..].iter().all(|n| n.parse::<u32>().is_ok()),
            "{circle:?}"
        );
    }
    assert!(
        log.contains("dumb: LWS_CALLBACK_CLIENT_ESTABLISHED"),
        "log:\n{log}"
    );
    assert!(
        log.contains("mirror: LWS_CALLBACK_CLIENT_ESTABLISHED"),
        "log:\n{log}"
    );
    // Lines like "rx 2 '17'": the counter, received in order.
    let counters: Vec<u64> = log
        .lines()
        .filter_map(|line| line.split(" rx ").nth(1))
        .filter_map(|rest| rest.split('\'').nth(1))
        .filter_map(|number| number.parse().ok())
        .collect();
    assert!(
        counters.len() >= 10,
        "counter lines: {counters:?}\nlog:\n{log}"
    );
    assert!(
        counters.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "the counter increases by one: {counters:?}"
    );
    assert_eq!(counters[0], 0, "the counter starts at 0");
}

/// A client of ours (tokio-tungstenite) against `libwebsockets-test-server`'s mirror protocol:
/// two members, every message reaches both, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_talks_to_libwebsockets_test_server() {
    if !lws_available() {
        return;
    }
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut lws = Command::new(LWS_SERVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start libwebsockets-test-server");
    let url = format!("ws://127.0.0.1:{port}/");
    let mut connected = None;
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            connected = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        connected.is_some(),
        "libwebsockets-test-server did not start"
    );

    let mut alice = connect(&url, "lws-mirror-protocol").await;
    let mut bob = connect(&url, "lws-mirror-protocol").await;
    let sent: Vec<String> = (0..50)
        .map(|i| format!("c #12AB34 {i} {} 5;", i * 2))
        .collect();
    for text in &sent {
        alice.send(Message::text(text.clone())).await.unwrap();
    }
    for member in [&mut alice, &mut bob] {
        let mut received = Vec::new();
        while received.len() < sent.len() {
            received.push(next_text(member).await);
        }
        assert_eq!(received, sent);
    }
    alice.close(None).await.ok();
    bob.close(None).await.ok();
    lws.kill().unwrap();
    lws.wait().unwrap();
}
