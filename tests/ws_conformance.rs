//! RFC 6455 conformance of the WebSocket core, end to end: the real binary, a raw-frame client
//! that sends what no library would (bad bits, bad opcodes, bad lengths, bad UTF-8, bad close
//! payloads), and the close code the server answers with, followed by the end of the TCP
//! connection with nothing written after the close frame. Large and fragmented messages are also
//! checked with `tokio-tungstenite`, an independent implementation, on the receiving side.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use support::{
    raw_ws::{OutFrame, RawWs, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PONG, OP_TEXT},
    Server,
};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{
    self,
    protocol::{
        frame::{
            coding::{Data, OpCode},
            Frame,
        },
        WebSocketConfig,
    },
    Message,
};

const MIB: usize = 1024 * 1024;
/// How long any single answer from the server may take.
const ANSWER: Duration = Duration::from_secs(5);
/// How soon after its close frame the server must end the TCP connection.
const PROMPT_END: Duration = Duration::from_secs(2);

/// Sends `frames` on a new connection and expects the server to fail it with `code`: a close
/// frame with that code, then the end of the connection, promptly, with nothing after the close.
async fn expect_failure(server: &Server, what: &str, frames: &[OutFrame], code: u16) -> String {
    let mut ws = RawWs::connect(server.addr, "/").await;
    for frame in frames {
        // The server may fail the connection before the last frames are written; that is fine.
        if ws.writer.send(frame).await.is_err() {
            break;
        }
    }
    let (close, end_after) = ws.expect_close_then_end(ANSWER).await;
    assert_eq!(
        close.close_code(),
        Some(code),
        "{what}: close code (reason {:?})",
        close.close_reason()
    );
    assert!(
        end_after < PROMPT_END,
        "{what}: the connection ended {end_after:?} after the close frame"
    );
    close.close_reason()
}

/// A text of `len` ASCII bytes that varies along its length, so that a misplaced or repeated
/// slice cannot compare equal by accident.
fn varied_text(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
    (0..len)
        .map(|i| ALPHABET[(i.wrapping_mul(7) ^ (i >> 10)) % ALPHABET.len()] as char)
        .collect()
}

fn big_client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(32 * MIB))
        .max_frame_size(Some(32 * MIB))
}

// ---------------------------------------------------------------------------------------------
// Framing violations → 1002

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frames_longer_than_125_bytes_are_protocol_errors() {
    let server = Server::start(&[]);
    expect_failure(
        &server,
        "ping of 126 bytes",
        &[OutFrame::ping(vec![b'p'; 126])],
        1002,
    )
    .await;
    expect_failure(
        &server,
        "pong of 126 bytes",
        &[OutFrame::pong(vec![b'p'; 126])],
        1002,
    )
    .await;
    let mut close = OutFrame::close(1000, "");
    close.payload.extend_from_slice(&[b'r'; 124]);
    expect_failure(&server, "close of 126 bytes", &[close], 1002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_control_frames_are_protocol_errors() {
    let server = Server::start(&[]);
    expect_failure(
        &server,
        "ping with FIN=0",
        &[OutFrame::ping("a").fin(false)],
        1002,
    )
    .await;
    expect_failure(
        &server,
        "pong with FIN=0",
        &[OutFrame::pong("a").fin(false)],
        1002,
    )
    .await;
    expect_failure(
        &server,
        "close with FIN=0",
        &[OutFrame::close(1000, "").fin(false)],
        1002,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_bits_are_protocol_errors() {
    let server = Server::start(&[]);
    for rsv in [0b100, 0b010, 0b001, 0b111] {
        let what = format!("text with RSV bits {rsv:03b}");
        expect_failure(&server, &what, &[OutFrame::text("hello").rsv(rsv)], 1002).await;
    }
    expect_failure(
        &server,
        "ping with RSV1",
        &[OutFrame::ping("x").rsv(0b100)],
        1002,
    )
    .await;
    expect_failure(
        &server,
        "continuation with RSV2",
        &[
            OutFrame::text("first ").fin(false),
            OutFrame::continuation("second").rsv(0b010),
        ],
        1002,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_opcodes_are_protocol_errors() {
    let server = Server::start(&[]);
    for opcode in (3..=7).chain(0xB..=0xF) {
        let what = format!("opcode {opcode:#x}");
        expect_failure(&server, &what, &[OutFrame::new(opcode, "payload")], 1002).await;
    }
    // Also when it arrives in the middle of a fragmented message.
    expect_failure(
        &server,
        "opcode 0x3 inside a fragmented message",
        &[OutFrame::text("a").fin(false), OutFrame::new(3, "b")],
        1002,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_with_nothing_to_continue_is_a_protocol_error() {
    let server = Server::start(&[]);
    expect_failure(
        &server,
        "final continuation first",
        &[OutFrame::continuation("orphan")],
        1002,
    )
    .await;
    expect_failure(
        &server,
        "non-final continuation first",
        &[OutFrame::continuation("orphan").fin(false)],
        1002,
    )
    .await;
    // After a complete fragmented message, a continuation again has nothing to continue.
    let mut ws = RawWs::connect(server.addr, "/").await;
    ws.send(OutFrame::text("one ").fin(false)).await;
    ws.send(OutFrame::continuation("two")).await;
    let echo = ws.recv(ANSWER).await;
    assert_eq!((echo.opcode, echo.text()), (OP_TEXT, "one two"));
    ws.send(OutFrame::continuation("three")).await;
    let (close, _) = ws.expect_close_then_end(ANSWER).await;
    assert_eq!(close.close_code(), Some(1002));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_data_frame_inside_a_fragmented_message_is_a_protocol_error() {
    let server = Server::start(&[]);
    expect_failure(
        &server,
        "text inside text",
        &[OutFrame::text("a").fin(false), OutFrame::text("b")],
        1002,
    )
    .await;
    expect_failure(
        &server,
        "binary inside text",
        &[OutFrame::text("a").fin(false), OutFrame::binary("b")],
        1002,
    )
    .await;
    expect_failure(
        &server,
        "non-final text inside binary",
        &[
            OutFrame::binary("a").fin(false),
            OutFrame::continuation("b").fin(false),
            OutFrame::text("c").fin(false),
        ],
        1002,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmasked_client_frames_are_protocol_errors() {
    let server = Server::start(&[]);
    expect_failure(
        &server,
        "unmasked text",
        &[OutFrame::text("hi").unmasked()],
        1002,
    )
    .await;
    expect_failure(
        &server,
        "unmasked ping",
        &[OutFrame::ping("hi").unmasked()],
        1002,
    )
    .await;
    expect_failure(
        &server,
        "unmasked close",
        &[OutFrame::close(1000, "").unmasked()],
        1002,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// UTF-8

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let server = Server::start(&[]);
    for (what, payload) in [
        ("lone continuation byte", b"abc\x80def".to_vec()),
        ("0xff", b"\xff".to_vec()),
        ("overlong encoding", b"\xc0\xaf".to_vec()),
        ("UTF-16 surrogate", b"\xed\xa0\x80".to_vec()),
        ("truncated character", b"euro \xe2\x82".to_vec()),
    ] {
        expect_failure(&server, what, &[OutFrame::text(payload)], 1007).await;
    }
    // Binary frames are not UTF-8 checked.
    let mut ws = RawWs::connect(server.addr, "/").await;
    ws.send(OutFrame::binary(b"\xff\xfe\x80".to_vec())).await;
    let echo = ws.recv(ANSWER).await;
    assert_eq!(
        (echo.opcode, echo.payload.as_slice()),
        (OP_BINARY, &b"\xff\xfe\x80"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_middle_fragment_fails_before_the_last_fragment() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    ws.send(OutFrame::text("hello ").fin(false)).await;
    ws.send(OutFrame::continuation(b"\xce\xba\xff world".to_vec()).fin(false))
        .await;
    // The third (final) fragment is never sent: the close must come without it.
    let (close, end_after) = ws.expect_close_then_end(ANSWER).await;
    assert_eq!(
        close.close_code(),
        Some(1007),
        "reason {:?}",
        close.close_reason()
    );
    assert!(
        end_after < PROMPT_END,
        "ended {end_after:?} after the close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_first_or_last_fragment_closes_with_1007() {
    let server = Server::start(&[]);
    // Refused in the first fragment already, without waiting for the rest.
    expect_failure(
        &server,
        "invalid first fragment",
        &[OutFrame::text(b"ok \xff".to_vec()).fin(false)],
        1007,
    )
    .await;
    // A character cut at the end of the message is never completed.
    expect_failure(
        &server,
        "truncated character at the end",
        &[
            OutFrame::text("ok ").fin(false),
            OutFrame::continuation(b"\xe2\x82".to_vec()),
        ],
        1007,
    )
    .await;
    // A character cut between fragments whose continuation is not a continuation byte.
    expect_failure(
        &server,
        "character cut and continued wrongly",
        &[
            OutFrame::text(b"ok \xe2".to_vec()).fin(false),
            OutFrame::continuation(b"AB".to_vec()).fin(false),
        ],
        1007,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_split_inside_a_character_is_reassembled() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    let text = "price: 5€, 😀 ok";
    let bytes = text.as_bytes();
    let euro = text.find('€').unwrap();
    let smile = text.find('😀').unwrap();
    // Cut inside the euro sign (3 bytes) twice and inside the emoji (4 bytes).
    let cuts = [0, euro + 1, euro + 2, smile + 3, bytes.len()];
    let pieces: Vec<&[u8]> = cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let opcode = if i == 0 { OP_TEXT } else { OP_CONTINUATION };
        let last = i + 1 == pieces.len();
        ws.send(OutFrame::new(opcode, piece.to_vec()).fin(last))
            .await;
    }
    let echo = ws.recv(ANSWER).await;
    assert_eq!(echo.opcode, OP_TEXT);
    assert!(echo.fin);
    assert_eq!(echo.text(), text);
}

// ---------------------------------------------------------------------------------------------
// The close handshake

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_is_echoed_and_the_server_ends_the_connection() {
    let server = Server::start(&[]);

    let mut ws = RawWs::connect(server.addr, "/").await;
    ws.send(OutFrame::close(1000, "done here")).await;
    let started = Instant::now();
    let (close, _) = ws.expect_close_then_end(ANSWER).await;
    assert_eq!(close.close_code(), Some(1000));
    assert!(
        started.elapsed() < PROMPT_END,
        "close echoed and connection ended after {:?}",
        started.elapsed()
    );

    // Other valid codes are echoed too.
    for code in [1001u16, 1003, 1011, 3000, 4999] {
        let mut ws = RawWs::connect(server.addr, "/").await;
        ws.send(OutFrame::close(code, "bye")).await;
        let (close, end_after) = ws.expect_close_then_end(ANSWER).await;
        assert_eq!(close.close_code(), Some(code));
        assert!(end_after < PROMPT_END);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_without_payload_is_answered_with_an_empty_close() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    ws.send(OutFrame::new(OP_CLOSE, Vec::new())).await;
    let (close, end_after) = ws.expect_close_then_end(ANSWER).await;
    assert!(
        close.payload.is_empty(),
        "expected an empty close, got {}",
        close.describe()
    );
    assert!(end_after < PROMPT_END);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_in_the_middle_of_a_fragmented_message_is_answered() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    // Control frames may come between fragments; a close ends the connection there.
    ws.send(OutFrame::text("never ").fin(false)).await;
    ws.send(OutFrame::close(1000, "changed my mind")).await;
    let (close, end_after) = ws.expect_close_then_end(ANSWER).await;
    assert_eq!(close.close_code(), Some(1000), "{}", close.describe());
    assert!(end_after < PROMPT_END);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_close_payloads_are_protocol_errors() {
    let server = Server::start(&[]);
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000] {
        let what = format!("close code {code}");
        expect_failure(&server, &what, &[OutFrame::close(code, "")], 1002).await;
    }
    expect_failure(
        &server,
        "1-byte close payload",
        &[OutFrame::new(OP_CLOSE, vec![0x03])],
        1002,
    )
    .await;
    let mut bad_reason = OutFrame::close(1000, "");
    bad_reason.payload.extend_from_slice(b"bye \xff\xfe");
    expect_failure(&server, "close reason not UTF-8", &[bad_reason], 1002).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_after_the_close_is_not_answered() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    // Close and, in the same write, more frames: none of them may get an answer.
    let mut bytes = OutFrame::close(1000, "").encode();
    bytes.extend(OutFrame::text("after close").encode());
    bytes.extend(OutFrame::ping("after close").encode());
    ws.send_raw(&bytes).await;
    let (close, _) = ws.expect_close_then_end(ANSWER).await;
    assert_eq!(close.close_code(), Some(1000));
}

// ---------------------------------------------------------------------------------------------
// Ping, echo, message types

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_with_the_most_significant_bit_set_fails_the_connection() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    // RFC 6455 §5.2: the 64-bit length's most significant bit must be 0.
    let mut header = OutFrame::binary(Vec::new()).header(1 << 20);
    header[2] |= 0x80;
    ws.send_raw(&header).await;
    let _ = ws.writer.send_raw(&[0u8; 1024]).await;
    let (close, end_after) = ws.expect_close_then_end(ANSWER).await;
    assert!(
        matches!(close.close_code(), Some(1002 | 1009)),
        "expected 1002 (or 1009), got {}",
        close.describe()
    );
    assert!(end_after < PROMPT_END);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_get_pongs_with_the_same_payload() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    let max: Vec<u8> = (0..125u8).collect();
    for payload in [
        b"hello ping".to_vec(),
        Vec::new(),
        max,
        vec![0xff, 0x00, 0x80],
    ] {
        ws.send(OutFrame::ping(payload.clone())).await;
        let pong = ws.recv(ANSWER).await;
        assert_eq!(pong.opcode, OP_PONG, "{}", pong.describe());
        assert!(pong.fin && !pong.masked && pong.rsv == 0);
        assert_eq!(pong.payload, payload);
    }
    // Unsolicited pongs get no answer: the next frame is the echo of a later message.
    ws.send(OutFrame::pong("unsolicited")).await;
    ws.send(OutFrame::text("after pong")).await;
    let echo = ws.recv(ANSWER).await;
    assert_eq!((echo.opcode, echo.text()), (OP_TEXT, "after pong"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_echo_with_their_type() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    ws.send(OutFrame::text("plain text")).await;
    ws.send(OutFrame::binary(vec![0u8, 1, 2, 255])).await;
    ws.send(OutFrame::text("")).await;
    ws.send(OutFrame::binary(Vec::new())).await;
    // Fragmented binary is reassembled and echoed as binary.
    ws.send(OutFrame::binary(vec![1u8, 2]).fin(false)).await;
    ws.send(OutFrame::continuation(vec![3u8]).fin(false)).await;
    ws.send(OutFrame::continuation(vec![4u8])).await;
    // Empty fragments are fragments too.
    ws.send(OutFrame::text("").fin(false)).await;
    ws.send(OutFrame::continuation("").fin(false)).await;
    ws.send(OutFrame::continuation("")).await;
    let expected: [(u8, &[u8]); 6] = [
        (OP_TEXT, b"plain text"),
        (OP_BINARY, &[0, 1, 2, 255]),
        (OP_TEXT, b""),
        (OP_BINARY, b""),
        (OP_BINARY, &[1, 2, 3, 4]),
        (OP_TEXT, b""),
    ];
    for (opcode, payload) in expected {
        let frame = ws.recv(ANSWER).await;
        assert_eq!(frame.opcode, opcode, "{}", frame.describe());
        assert!(
            frame.fin && !frame.masked && frame.rsv == 0,
            "{}",
            frame.describe()
        );
        assert_eq!(frame.payload, payload);
    }

    // The same through an independent client library.
    let (mut client, _) = tokio_tungstenite::connect_async(server.ws_url("/"))
        .await
        .expect("connect");
    client.send(Message::text("via tungstenite")).await.unwrap();
    client.send(Message::binary(vec![9u8, 8, 7])).await.unwrap();
    let first = timeout(ANSWER, client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first, Message::text("via tungstenite"));
    let second = timeout(ANSWER, client.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second, Message::binary(vec![9u8, 8, 7]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_between_fragments_are_answered_before_the_message() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    let text = varied_text(10 * 100_000);
    let pieces: Vec<&str> = (0..10)
        .map(|i| &text[i * 100_000..(i + 1) * 100_000])
        .collect();
    for (i, piece) in pieces.iter().enumerate() {
        let opcode = if i == 0 { OP_TEXT } else { OP_CONTINUATION };
        ws.send(OutFrame::new(opcode, piece.as_bytes().to_vec()).fin(i == 9))
            .await;
        if i < 9 {
            ws.send(OutFrame::ping(format!("ping-{i}"))).await;
        }
    }
    for i in 0..9 {
        let pong = ws.recv(ANSWER).await;
        assert_eq!(
            pong.opcode,
            OP_PONG,
            "expected pong {i}, got {}",
            pong.describe()
        );
        assert_eq!(pong.text(), format!("ping-{i}"));
    }
    let echo = ws.recv(ANSWER).await;
    assert_eq!(echo.opcode, OP_TEXT, "{}", echo.describe());
    assert!(echo.fin);
    assert!(echo.payload == text.as_bytes(), "echoed message differs");
}

// ---------------------------------------------------------------------------------------------
// Message size

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_message_in_1000_fragments_is_echoed_whole() {
    let server = Server::start(&[]);
    let (mut client, _) = tokio_tungstenite::connect_async_with_config(
        server.ws_url("/"),
        Some(big_client_config()),
        false,
    )
    .await
    .expect("connect");

    let total = 16 * MIB;
    let text = Bytes::from(varied_text(total));
    let fragment = total / 1000; // 16777 bytes; the last fragment takes the rest
    let started = Instant::now();
    let mut pings = 0;
    for i in 0..1000 {
        let start = i * fragment;
        let end = if i == 999 { total } else { start + fragment };
        let opcode = if i == 0 { Data::Text } else { Data::Continue };
        let frame = Frame::message(text.slice(start..end), OpCode::Data(opcode), i == 999);
        client
            .send(Message::Frame(frame))
            .await
            .expect("send fragment");
        if i % 100 == 50 {
            client
                .send(Message::Ping(Bytes::from(format!("between-{pings}"))))
                .await
                .expect("send ping");
            pings += 1;
        }
    }
    let sent_in = started.elapsed();

    let mut pongs = 0;
    let echoed = loop {
        let message = timeout(Duration::from_secs(30), client.next())
            .await
            .expect("an answer within 30 s")
            .expect("the connection stays open")
            .expect("a valid message");
        match message {
            Message::Pong(payload) => {
                assert_eq!(payload, format!("between-{pongs}").as_bytes(), "pong order");
                pongs += 1;
            }
            Message::Text(echoed) => break echoed,
            other => panic!("unexpected {:?}", other_kind(&other)),
        }
    };
    println!(
        "16 MiB in 1000 fragments: sent in {sent_in:?}, echoed after {:?}",
        started.elapsed()
    );
    assert_eq!(
        pongs, pings,
        "every ping between fragments is answered before the message"
    );
    assert_eq!(echoed.len(), total);
    assert!(echoed.as_bytes() == text.as_ref(), "echoed message differs");
}

fn other_kind(message: &Message) -> String {
    match message {
        Message::Close(frame) => format!("close {frame:?}"),
        other => format!(
            "{} byte message {:?}",
            other.len(),
            std::mem::discriminant(other)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_in_fragments_closes_with_1009() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    // 16 fragments of 1 MiB are exactly the limit; the 17th goes over it.
    for i in 0..17 {
        let opcode = if i == 0 { OP_TEXT } else { OP_CONTINUATION };
        let frame = OutFrame::new(opcode, Vec::new()).fin(false);
        ws.writer
            .send_large(&frame, MIB as u64, b"0123456789abcdef")
            .await
            .expect("send fragment");
    }
    let (close, end_after) = ws.expect_close_then_end(Duration::from_secs(10)).await;
    assert_eq!(
        close.close_code(),
        Some(1009),
        "reason {:?}",
        close.close_reason()
    );
    assert!(end_after < PROMPT_END);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_frame_over_the_limit_closes_with_1009() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    let frame = OutFrame::new(OP_BINARY, Vec::new());
    // The server may answer before the whole payload is written.
    let _ = ws
        .writer
        .send_large(&frame, 17 * MIB as u64, b"0123456789abcdef")
        .await;
    let (close, end_after) = ws.expect_close_then_end(Duration::from_secs(10)).await;
    assert_eq!(
        close.close_code(),
        Some(1009),
        "reason {:?}",
        close.close_reason()
    );
    assert!(end_after < PROMPT_END);

    // A message of exactly the limit, in one frame, is still echoed.
    let (mut client, _) = tokio_tungstenite::connect_async_with_config(
        server.ws_url("/"),
        Some(big_client_config()),
        false,
    )
    .await
    .expect("connect");
    let data = Bytes::from(varied_text(16 * MIB));
    client.send(Message::Binary(data.clone())).await.unwrap();
    let echo = timeout(Duration::from_secs(30), client.next())
        .await
        .expect("echo within 30 s")
        .unwrap()
        .unwrap();
    assert!(
        matches!(&echo, Message::Binary(got) if *got == data),
        "16 MiB binary echo"
    );
}

/// A frame header may announce a payload far over the limit. The server should fail such a
/// connection when it reads the header (as it does for fragments that add up past the limit),
/// not buffer the payload while it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_header_is_refused_before_its_payload() {
    let server = Server::start(&[]);
    let rss_before = server.rss_kib();
    let ws = RawWs::connect(server.addr, "/").await;
    let RawWs {
        mut reader,
        mut writer,
        ..
    } = ws;
    // Announce 1 GiB, then send 64 MiB of it at most.
    let frame = OutFrame::new(OP_BINARY, Vec::new());
    let sender = tokio::spawn(async move {
        let _ = writer.send_raw(&frame.header(1 << 30)).await;
        let chunk = vec![b'x'; MIB];
        for _ in 0..64 {
            if writer.send_raw(&chunk).await.is_err() {
                break;
            }
        }
        writer
    });
    let answer = timeout(Duration::from_secs(10), reader.read_frame()).await;
    let rss_after = server.rss_kib();
    println!("oversized header: RSS {rss_before} KiB before, {rss_after} KiB after");
    sender.abort();
    let frame = answer
        .expect("a close frame within 10 s of announcing 1 GiB")
        .expect("read")
        .expect("a frame");
    assert_eq!(frame.close_code(), Some(1009), "{}", frame.describe());
    assert!(
        rss_after < rss_before + 32 * 1024,
        "the server buffered the payload: RSS {rss_before} → {rss_after} KiB"
    );
}

/// The end of the stream, as the raw client sees it, is also reported for a clean close from
/// the client's side: the server answers and closes TCP first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tungstenite_close_completes_cleanly() {
    let server = Server::start(&[]);
    let (mut client, _) = tokio_tungstenite::connect_async(server.ws_url("/"))
        .await
        .expect("connect");
    client
        .close(Some(tungstenite::protocol::CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .expect("send close");
    let started = Instant::now();
    loop {
        match timeout(ANSWER, client.next()).await.expect("close answer") {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1000);
            }
            Some(Ok(other)) => panic!("unexpected {}", other_kind(&other)),
            Some(Err(tungstenite::Error::ConnectionClosed)) | None => break,
            Some(Err(err)) => panic!("close did not complete cleanly: {err}"),
        }
    }
    assert!(
        started.elapsed() < PROMPT_END,
        "closed in {:?}",
        started.elapsed()
    );
}
