//! permessage-deflate (RFC 7692), end to end: the answer to various offers, `--compression
//! off`, a compressed echo, a broadcast to a room where some members negotiated compression and
//! some did not, `--compress-min`, a zip bomb against `--max-message-size`, and RSV1 where it is
//! not allowed. The client is the raw-frame client with flate2 doing the compression, so every
//! bit on the wire is the test's to check.

mod support;

use std::time::{Duration, Instant};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use support::{
    raw_ws::{InFrame, OutFrame, RawWs, OP_BINARY, OP_TEXT},
    Server,
};

const ANSWER: Duration = Duration::from_secs(5);
const OFFER: (&str, &str) = ("Sec-WebSocket-Extensions", "permessage-deflate");
const ANSWERED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const RSV1: u8 = 0b100;

/// A message compressed as RFC 7692 §7.2.1 says (sync flush, trailer removed).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut raw = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        out.reserve(64 * 1024);
        let before = raw.total_in() as usize;
        raw.compress_vec(&data[before..], &mut out, FlushCompress::Sync)
            .unwrap();
        if raw.total_in() as usize == data.len() && out.ends_with(&[0, 0, 0xff, 0xff]) {
            break;
        }
    }
    out.truncate(out.len() - 4);
    out
}

/// The payload of a compressed message from the server (RFC 7692 §7.2.2).
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut raw = Decompress::new(false);
    let mut out = Vec::new();
    while (raw.total_in() as usize) < input.len() || out.len() == out.capacity() {
        out.reserve(64 * 1024);
        let before = (raw.total_in(), raw.total_out());
        let consumed = raw.total_in() as usize;
        raw.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
            .unwrap();
        if (raw.total_in(), raw.total_out()) == before {
            break;
        }
    }
    out
}

/// The text of a data frame from the server, inflated if its RSV1 says it is compressed.
fn text_of(frame: &InFrame) -> String {
    assert_eq!(
        frame.opcode,
        OP_TEXT,
        "expected text, got {}",
        frame.describe()
    );
    let payload = if frame.rsv & RSV1 != 0 {
        inflate(&frame.payload)
    } else {
        frame.payload.clone()
    };
    String::from_utf8(payload).unwrap()
}

/// The server's `Sec-WebSocket-Extensions` answer to a handshake offering `offers` (one header
/// each).
async fn answer_to(server: &Server, offers: &[&str]) -> Option<String> {
    let headers: Vec<(&str, &str)> = offers
        .iter()
        .map(|offer| ("Sec-WebSocket-Extensions", *offer))
        .collect();
    let ws = RawWs::connect_with(server.addr, "/", &headers).await;
    ws.response
        .header("sec-websocket-extensions")
        .map(str::to_owned)
}

fn chat_like_json(n: usize) -> String {
    let mut text = String::from("[");
    while text.len() < n {
        text.push_str(r#"{"type":"message","room":"lobby","nick":"alice","text":"hello there"},"#);
    }
    text.truncate(n - 1);
    text.push(']');
    text
}

#[tokio::test]
async fn offers_are_answered_as_rfc_7692_says() {
    let server = Server::start(&[]);
    assert_eq!(
        answer_to(&server, &["permessage-deflate"]).await.as_deref(),
        Some(ANSWERED)
    );
    // Chromium's offer.
    assert_eq!(
        answer_to(&server, &["permessage-deflate; client_max_window_bits"])
            .await
            .as_deref(),
        Some(ANSWERED)
    );
    assert_eq!(
        answer_to(&server, &["permessage-deflate; server_max_window_bits=15"])
            .await
            .as_deref(),
        Some(format!("{ANSWERED}; server_max_window_bits=15").as_str())
    );
    // A first offer the server cannot honour (a smaller window for what it sends), then one it
    // can, in a second header.
    assert_eq!(
        answer_to(
            &server,
            &[
                "x-unknown, permessage-deflate; server_max_window_bits=10",
                "permessage-deflate; client_no_context_takeover"
            ]
        )
        .await
        .as_deref(),
        Some(ANSWERED)
    );
    // Malformed offers are declined: the connection opens without compression.
    for bad in [
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; unknown_parameter",
        "permessage-deflate; server_max_window_bits=8",
    ] {
        assert_eq!(answer_to(&server, &[bad]).await, None, "{bad}");
    }
    assert_eq!(answer_to(&server, &[]).await, None);
}

#[tokio::test]
async fn compression_off_declines_every_offer() {
    let server = Server::start(&["--compression", "off"]);
    assert_eq!(answer_to(&server, &["permessage-deflate"]).await, None);
    // And RSV1 is then a protocol error.
    let mut ws = RawWs::connect_with(server.addr, "/", &[OFFER]).await;
    ws.send(OutFrame::text(deflate(b"hello hello hello")).rsv(RSV1))
        .await;
    let (close, _) = ws.expect_close_then_end(ANSWER).await;
    assert_eq!(close.close_code(), Some(1002));
}

#[tokio::test]
async fn a_compressed_message_is_echoed_compressed() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect_with(server.addr, "/", &[OFFER]).await;
    let text = chat_like_json(1024);
    ws.send(OutFrame::text(deflate(text.as_bytes())).rsv(RSV1))
        .await;
    let echo = ws.recv_skipping_pings(ANSWER).await;
    assert_eq!(
        echo.rsv,
        RSV1,
        "the echo is compressed: {}",
        echo.describe()
    );
    assert!(
        echo.payload.len() * 3 < text.len(),
        "{}",
        echo.payload.len()
    );
    assert_eq!(text_of(&echo), text);

    // Fragmented: RSV1 on the first frame only, the compressed bytes cut anywhere.
    let compressed = deflate(text.as_bytes());
    let (a, rest) = compressed.split_at(7);
    let (b, c) = rest.split_at(rest.len() / 2);
    ws.send(OutFrame::text(a).fin(false).rsv(RSV1)).await;
    ws.send(OutFrame::continuation(b).fin(false)).await;
    ws.send(OutFrame::continuation(c)).await;
    assert_eq!(text_of(&ws.recv_skipping_pings(ANSWER).await), text);

    // Uncompressed messages still work on the same connection; binary too.
    ws.send(OutFrame::text("short")).await;
    let short = ws.recv_skipping_pings(ANSWER).await;
    assert_eq!((short.rsv, text_of(&short).as_str()), (0, "short"));
    let data = vec![9u8; 4000];
    ws.send(OutFrame::binary(deflate(&data)).rsv(RSV1)).await;
    let echo = ws.recv_skipping_pings(ANSWER).await;
    assert_eq!((echo.opcode, echo.rsv), (OP_BINARY, RSV1));
    assert!(inflate(&echo.payload) == data, "the binary echo differs");
}

#[tokio::test]
async fn compressed_text_that_is_not_utf8_closes_1007() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect_with(server.addr, "/", &[OFFER]).await;
    let mut bad = b"hello hello hello hello".to_vec();
    bad.push(0xff);
    ws.send(OutFrame::text(deflate(&bad)).rsv(RSV1)).await;
    let (close, _) = ws.expect_close_then_end(ANSWER).await;
    assert_eq!(close.close_code(), Some(1007));
}

/// The server answers with `client_no_context_takeover`; a client that keeps its compression
/// context anyway sends a second message whose back-references point into the first. The server
/// holds no window from the first message, so it must close with 1007, never echo a text made
/// up of whatever its empty window held.
#[tokio::test]
async fn a_message_that_refers_to_the_previous_one_closes_1007() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect_with(server.addr, "/", &[OFFER]).await;
    let text = chat_like_json(1024);
    let mut context = Compress::new(Compression::default(), false);
    let mut compress_with_context = |data: &[u8]| {
        let mut out = Vec::with_capacity(data.len() + 1024);
        context
            .compress_vec(data, &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    };
    let first = compress_with_context(text.as_bytes());
    ws.send(OutFrame::text(first).rsv(RSV1)).await;
    assert_eq!(text_of(&ws.recv_skipping_pings(ANSWER).await), text);

    let second = compress_with_context(text.as_bytes());
    assert!(
        second.len() < 64,
        "it refers to the first: {}",
        second.len()
    );
    ws.send(OutFrame::text(second).rsv(RSV1)).await;
    let frame = ws.recv_skipping_pings(ANSWER).await;
    assert_eq!(frame.close_code(), Some(1007), "{}", frame.describe());
}

#[tokio::test]
async fn corrupt_compressed_data_closes_1007() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect_with(server.addr, "/", &[OFFER]).await;
    ws.send(OutFrame::text(vec![0xff; 40]).rsv(RSV1)).await;
    let (close, _) = ws.expect_close_then_end(ANSWER).await;
    assert_eq!(close.close_code(), Some(1007));
}

#[tokio::test]
async fn a_broadcast_reaches_compressed_and_plain_members_alike() {
    let server = Server::start(&["--workers", "2"]);
    let mirror = ("Sec-WebSocket-Protocol", "lws-mirror-protocol");
    let mut compressed = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..3 {
        compressed.push(RawWs::connect_with(server.addr, "/?mirror=mixed", &[mirror, OFFER]).await);
        plain.push(RawWs::connect_with(server.addr, "/?mirror=mixed", &[mirror]).await);
    }
    // Let every member's join land before the broadcast.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = chat_like_json(1024);
    plain[0].send(OutFrame::text(text.clone())).await;
    for ws in &mut compressed {
        let frame = ws.recv_skipping_pings(ANSWER).await;
        assert_eq!(frame.rsv, RSV1, "{}", frame.describe());
        assert!(frame.payload.len() * 3 < text.len());
        assert_eq!(text_of(&frame), text);
    }
    for ws in &mut plain {
        let frame = ws.recv_skipping_pings(ANSWER).await;
        assert_eq!(frame.rsv, 0, "{}", frame.describe());
        assert_eq!(frame.payload, text.as_bytes());
    }
}

#[tokio::test]
async fn messages_under_compress_min_go_out_plain() {
    let server = Server::start(&["--compress-min", "2KiB"]);
    let mut ws = RawWs::connect_with(server.addr, "/", &[OFFER]).await;
    let small = chat_like_json(1024);
    ws.send(OutFrame::text(small.clone())).await;
    let frame = ws.recv_skipping_pings(ANSWER).await;
    assert_eq!((frame.rsv, text_of(&frame)), (0, small));
    let large = chat_like_json(4096);
    ws.send(OutFrame::text(large.clone())).await;
    let frame = ws.recv_skipping_pings(ANSWER).await;
    assert_eq!((frame.rsv, text_of(&frame)), (RSV1, large));
}

#[tokio::test]
async fn a_zip_bomb_closes_1009_without_inflating_it() {
    let server = Server::start(&["--max-message-size", "1MiB", "--workers", "1"]);
    let bomb = deflate(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 100 * 1024, "{} bytes", bomb.len());
    let mut ws = RawWs::connect_with(server.addr, "/", &[OFFER]).await;
    // Warm up: the first compressed message allocates what every one needs.
    ws.send(OutFrame::text(deflate(chat_like_json(1024).as_bytes())).rsv(RSV1))
        .await;
    ws.recv_skipping_pings(ANSWER).await;
    let before = server.rss_kib();
    let started = Instant::now();
    ws.send(OutFrame::binary(bomb).rsv(RSV1)).await;
    let (close, _) = ws.expect_close_then_end(ANSWER).await;
    let after = server.rss_kib();
    assert_eq!(close.close_code(), Some(1009));
    println!(
        "zip bomb: RSS {before} KiB before, {after} KiB after; closed in {:?}",
        started.elapsed()
    );
    // The inflated size is 64 MiB; the limit is 1 MiB.
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[tokio::test]
async fn rsv1_without_negotiation_closes_1002() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    assert_eq!(ws.response.header("sec-websocket-extensions"), None);
    ws.send(OutFrame::text(deflate(b"hello hello hello")).rsv(RSV1))
        .await;
    let (close, _) = ws.expect_close_then_end(ANSWER).await;
    assert_eq!(close.close_code(), Some(1002));
}

#[tokio::test]
async fn rsv1_on_a_control_or_continuation_frame_closes_1002() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect_with(server.addr, "/", &[OFFER]).await;
    ws.send(OutFrame::ping("x").rsv(RSV1)).await;
    let (close, _) = ws.expect_close_then_end(ANSWER).await;
    assert_eq!(close.close_code(), Some(1002));

    let mut ws = RawWs::connect_with(server.addr, "/", &[OFFER]).await;
    let compressed = deflate(chat_like_json(512).as_bytes());
    let (a, b) = compressed.split_at(10);
    ws.send(OutFrame::text(a).fin(false).rsv(RSV1)).await;
    ws.send(OutFrame::continuation(b).rsv(RSV1)).await;
    let (close, _) = ws.expect_close_then_end(ANSWER).await;
    assert_eq!(close.close_code(), Some(1002));
}
