//! The WebSocket handshake, end to end: which requests upgrade, which protocol is chosen from
//! `Sec-WebSocket-Protocol`, how bad handshakes are refused (status, headers, body), and how the
//! related start-up flags are checked (bad values exit 2 with one line; sizes take units).

mod support;

use std::{process::Command, time::Duration};

use futures_util::{SinkExt, StreamExt};
use support::{
    project_static_dir,
    raw_ws::{http_exchange, upgrade_request, HttpResponse, OutFrame, RawWs, OP_TEXT},
    Server,
};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue, Message};

const ANSWER: Duration = Duration::from_secs(5);

async fn refused(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let request = upgrade_request(method, path, headers);
    let (response, _, _) = timeout(ANSWER, http_exchange(server.addr, &request))
        .await
        .expect("an answer within 5 s")
        .expect("an HTTP response");
    response
}

/// Sends a text message and expects it back (the echo protocol).
async fn assert_echoes(ws: &mut RawWs, text: &str) {
    ws.send(OutFrame::text(text)).await;
    let frame = ws.recv(ANSWER).await;
    assert_eq!(frame.opcode, OP_TEXT, "{}", frame.describe());
    assert_eq!(frame.text(), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_path_upgrades() {
    let server = Server::start(&[]);
    for path in [
        "/",
        "/some/deep/path?x=1",
        "/index.html",
        "/test.html",
        "/does-not-exist",
    ] {
        let mut ws = RawWs::connect(server.addr, path).await;
        assert_eq!(
            ws.response
                .header("upgrade")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("websocket"),
            "{path}"
        );
        assert_echoes(&mut ws, &format!("hello on {path}")).await;
    }

    // Without `Upgrade: websocket` the same paths are plain HTTP.
    let index = reqwest::get(server.http_url("/index.html")).await.unwrap();
    assert_eq!(index.status(), 200);
    let missing = reqwest::get(server.http_url("/does-not-exist"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_style_headers_upgrade() {
    let server = Server::start(&[]);
    // Firefox sends `Connection: keep-alive, Upgrade`; header values are case-insensitive.
    for headers in [
        &[("Connection", "keep-alive, Upgrade")][..],
        &[("Connection", "upgrade"), ("Upgrade", "WebSocket")][..],
        &[
            ("Connection", "Keep-Alive,Upgrade"),
            ("Upgrade", "websocket"),
        ][..],
    ] {
        let mut ws = RawWs::connect_with(server.addr, "/", headers).await;
        assert_echoes(&mut ws, &format!("{headers:?}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_sent_right_behind_the_request_is_not_lost() {
    let server = Server::start(&[]);
    // Some clients write their first frame before the 101 arrives.
    let mut early = OutFrame::text("sent before the 101").encode();
    early.extend(OutFrame::ping("early ping").encode());
    let mut ws = RawWs::connect_with_early_data(server.addr, "/", &[], &early).await;
    let echo = ws.recv(ANSWER).await;
    assert_eq!((echo.opcode, echo.text()), (OP_TEXT, "sent before the 101"));
    let pong = ws.recv(ANSWER).await;
    assert_eq!(pong.text(), "early ping", "{}", pong.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_known_offered_protocol_is_chosen_and_named() {
    let server = Server::start(&[]);
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[("Sec-WebSocket-Protocol", "lws-mirror-protocol")],
            "lws-mirror-protocol",
        ),
        (&[("Sec-WebSocket-Protocol", "echo")], "echo"),
        (&[("Sec-WebSocket-Protocol", "nope, echo")], "echo"),
        (
            &[("Sec-WebSocket-Protocol", "nope,lws-mirror-protocol, echo")],
            "lws-mirror-protocol",
        ),
        // The offer may be split over several header lines.
        (
            &[
                ("Sec-WebSocket-Protocol", "nope"),
                ("Sec-WebSocket-Protocol", "echo"),
            ],
            "echo",
        ),
    ];
    for (headers, chosen) in cases {
        let mut ws = RawWs::connect_with(server.addr, "/", headers).await;
        assert_eq!(
            ws.response.header("sec-websocket-protocol"),
            Some(chosen),
            "offered {headers:?}"
        );
        // Either protocol sends a lone member's message back to it.
        assert_echoes(&mut ws, "ping-pong").await;
    }

    // A client library that offers a protocol accepts the answer.
    let mut request = server.ws_url("/").into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("lws-mirror-protocol"),
    );
    let (_, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "lws-mirror-protocol"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_offer_gets_the_default_protocol_without_naming_it() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    assert_eq!(ws.response.header("sec-websocket-protocol"), None);
    assert_echoes(&mut ws, "default is echo").await;

    // Two connections without an offer do not see each other's messages (echo, not mirror).
    let mut a = RawWs::connect(server.addr, "/").await;
    let mut b = RawWs::connect(server.addr, "/").await;
    b.send(OutFrame::ping("ready?")).await;
    assert_eq!(b.recv(ANSWER).await.text(), "ready?");
    assert_echoes(&mut a, "from a").await;
    assert_echoes(&mut b, "from b").await;

    let (mut client, response) = tokio_tungstenite::connect_async(server.ws_url("/"))
        .await
        .expect("connect");
    assert!(response.headers().get("sec-websocket-protocol").is_none());
    client.send(Message::text("via library")).await.unwrap();
    let echo = timeout(ANSWER, client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo, Message::text("via library"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_protocol_flag_applies_to_connections_without_an_offer() {
    let server = Server::start(&["--default-protocol", "lws-mirror-protocol"]);
    let mut a = RawWs::connect(server.addr, "/").await;
    let mut b = RawWs::connect(server.addr, "/").await;
    assert_eq!(a.response.header("sec-websocket-protocol"), None);
    assert_eq!(b.response.header("sec-websocket-protocol"), None);
    // Make sure b has joined before a sends (its session answers a ping only once started).
    b.send(OutFrame::ping("ready?")).await;
    assert_eq!(b.recv(ANSWER).await.text(), "ready?");
    a.send(OutFrame::text("mirrored")).await;
    for ws in [&mut a, &mut b] {
        let frame = ws.recv(ANSWER).await;
        assert_eq!((frame.opcode, frame.text()), (OP_TEXT, "mirrored"));
    }

    // Offering echo explicitly still gets echo.
    let mut echo =
        RawWs::connect_with(server.addr, "/", &[("Sec-WebSocket-Protocol", "echo")]).await;
    assert_eq!(echo.response.header("sec-websocket-protocol"), Some("echo"));
    assert_echoes(&mut echo, "just me").await;
    // ... and the mirror members did not get it.
    a.send(OutFrame::ping("after")).await;
    let next = a.recv(ANSWER).await;
    assert_eq!(
        next.text(),
        "after",
        "mirror member got {}",
        next.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offering_only_unknown_protocols_is_refused_with_the_served_list() {
    let server = Server::start(&[]);
    for offer in ["nope", "nope, nada", "chat.v2 , superchat"] {
        let response = refused(&server, "GET", "/", &[("Sec-WebSocket-Protocol", offer)]).await;
        assert_eq!(response.status, 400, "offer {offer:?}");
        let body = response.body_text();
        assert!(
            body.contains("echo") && body.contains("lws-mirror-protocol"),
            "the body should name the served protocols: {body:?}"
        );
        assert_eq!(response.header("sec-websocket-accept"), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_handshakes_are_refused() {
    let server = Server::start(&[]);

    let old_version = refused(&server, "GET", "/", &[("Sec-WebSocket-Version", "8")]).await;
    assert_eq!(old_version.status, 426, "{:?}", old_version.body_text());
    assert_eq!(old_version.header("sec-websocket-version"), Some("13"));

    let no_key = refused(&server, "GET", "/", &[("Sec-WebSocket-Key", "")]).await;
    assert_eq!(no_key.status, 400, "{:?}", no_key.body_text());
    assert_eq!(no_key.header("sec-websocket-accept"), None);

    let post = refused(&server, "POST", "/", &[("Content-Length", "0")]).await;
    assert_eq!(post.status, 400, "{:?}", post.body_text());
    assert_eq!(post.header("sec-websocket-accept"), None);

    // A refusal does not break the server: the next handshake works.
    let mut ws = RawWs::connect(server.addr, "/").await;
    assert_echoes(&mut ws, "still fine").await;
}

// ---------------------------------------------------------------------------------------------
// Start-up flags

/// Runs the binary with `args` and expects it to exit on its own within 10 s.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let static_dir = project_static_dir();
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .args([
            "--bind",
            "127.0.0.1:0",
            "--static-dir",
            static_dir.to_str().unwrap(),
        ])
        .args(args)
        .env_remove("RUST_LOG");
    let (code, _, stderr) = support::run_to_exit(command);
    (code, stderr)
}

#[test]
fn an_unknown_default_protocol_exits_2_with_one_line() {
    let (code, stderr) = run_to_exit(&["--default-protocol", "nope"]);
    assert_eq!(code, Some(2), "stderr: {stderr:?}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr:?}");
    assert!(lines[0].contains("nope"), "{stderr:?}");
    assert!(
        lines[0].contains("echo") && lines[0].contains("lws-mirror-protocol"),
        "the message should name the known protocols: {stderr:?}"
    );
}

#[test]
fn a_size_flag_with_a_bad_unit_exits_2_with_one_line() {
    let (code, stderr) = run_to_exit(&["--max-backlog", "lots"]);
    assert_eq!(code, Some(2), "stderr: {stderr:?}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr:?}");
    assert!(
        lines[0].contains("--max-backlog") && lines[0].contains("lots"),
        "the message should name the flag and the value: {stderr:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_size_limit_takes_units() {
    let server = Server::start(&["--max-message-size", "64KiB"]);
    let limit = 64 * 1024;

    let mut ws = RawWs::connect(server.addr, "/").await;
    let exact = vec![b'x'; limit];
    ws.send(OutFrame::binary(exact.clone())).await;
    let echo = ws.recv(ANSWER).await;
    assert_eq!(echo.payload.len(), limit);
    assert!(echo.payload == exact);
    // The limit counts the whole message, not each fragment.
    ws.send(OutFrame::text(vec![b'a'; limit / 2]).fin(false))
        .await;
    ws.send(OutFrame::continuation(vec![b'b'; limit / 2])).await;
    assert_eq!(ws.recv(ANSWER).await.payload.len(), limit);

    let mut over = RawWs::connect(server.addr, "/").await;
    over.send(OutFrame::binary(vec![b'x'; limit + 1])).await;
    let (close, _) = over.expect_close_then_end(ANSWER).await;
    assert_eq!(
        close.close_code(),
        Some(1009),
        "reason {:?}",
        close.close_reason()
    );

    let mut over = RawWs::connect(server.addr, "/").await;
    over.send(OutFrame::text(vec![b'a'; limit / 2]).fin(false))
        .await;
    over.send(OutFrame::continuation(vec![b'b'; limit / 2 + 1]))
        .await;
    let (close, _) = over.expect_close_then_end(ANSWER).await;
    assert_eq!(
        close.close_code(),
        Some(1009),
        "reason {:?}",
        close.close_reason()
    );
}
