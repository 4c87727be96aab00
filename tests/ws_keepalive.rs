//! Keepalive and timeouts, end to end: the server pings every `--ping-interval`, closes a peer
//! silent for `--idle-timeout` with 1001 "idle timeout", leaves alone a peer that answers or
//! talks, and ends a connection whose socket is stuck (the peer neither reads nor sends) even
//! though it can no longer write to it.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use support::{
    raw_ws::{OutFrame, RawWs, StreamEnd, OP_CLOSE, OP_PING, OP_TEXT},
    ws_client::{connect_ready, join_mirror, server_socket_for, wait_until_server_lets_go},
    Server,
};
use tokio::{net::TcpSocket, time::timeout};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_pinged_every_interval() {
    let server = Server::start(&["--ping-interval", "1"]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    let connected = Instant::now();
    let mut pings = Vec::new();
    // Listen, answering nothing, for 4.5 s.
    while let Ok(frame) = timeout(
        Duration::from_millis(4500).saturating_sub(connected.elapsed()),
        ws.reader.read_frame(),
    )
    .await
    {
        let frame = frame.expect("read").expect("the connection stays open");
        assert_eq!(frame.opcode, OP_PING, "unexpected {}", frame.describe());
        assert!(frame.fin && !frame.masked && frame.payload.len() <= 125);
        pings.push(connected.elapsed());
    }
    println!("pings at {pings:?}");
    assert!(
        (3..=5).contains(&pings.len()),
        "expected about 4 pings in 4.5 s, got {pings:?}"
    );
    assert!(
        pings[0] > Duration::from_millis(700) && pings[0] < Duration::from_millis(1700),
        "first ping at {:?}",
        pings[0]
    );
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap > Duration::from_millis(700) && gap < Duration::from_millis(1700),
            "pings {gap:?} apart: {pings:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_nothing_is_closed_for_idleness() {
    let server = Server::start(&["--ping-interval", "1", "--idle-timeout", "2"]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    let connected = Instant::now();
    let close = loop {
        let frame = ws.recv(Duration::from_secs(5)).await;
        match frame.opcode {
            OP_PING => {} // not answered
            OP_CLOSE => break frame,
            _ => panic!("unexpected {}", frame.describe()),
        }
    };
    let closed_after = connected.elapsed();
    println!("idle close after {closed_after:?}");
    assert_eq!(close.close_code(), Some(1001), "{}", close.describe());
    assert_eq!(close.close_reason(), "idle timeout");
    assert!(
        closed_after >= Duration::from_millis(1900) && closed_after < Duration::from_secs(4),
        "closed after {closed_after:?}"
    );
    // Answering the close completes the handshake: the server ends the connection at once,
    // with nothing after its close frame.
    ws.send(OutFrame::close(1001, "")).await;
    let answered = Instant::now();
    let (rest, end) = ws.reader.read_to_end(Duration::from_secs(3)).await;
    assert!(
        rest.is_empty(),
        "{} bytes after the close frame",
        rest.len()
    );
    assert_eq!(end, StreamEnd::Eof);
    assert!(
        answered.elapsed() < Duration::from_secs(1),
        "ended after {:?}",
        answered.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_the_idle_close_is_cut_off() {
    let server = Server::start(&[
        "--ping-interval",
        "1",
        "--idle-timeout",
        "2",
        "--close-timeout",
        "1",
    ]);
    let mut ws = RawWs::connect(server.addr, "/").await;
    let connected = Instant::now();
    let close = ws.recv_skipping_pings(Duration::from_secs(5)).await;
    assert_eq!(close.close_code(), Some(1001), "{}", close.describe());
    let close_at = connected.elapsed();
    // No answer to the close: the server ends TCP after --close-timeout, writing nothing more.
    let (rest, end) = ws.reader.read_to_end(Duration::from_secs(5)).await;
    let ended_after = connected.elapsed() - close_at;
    println!("idle close at {close_at:?}, connection ended {ended_after:?} later");
    assert!(
        rest.is_empty(),
        "{} bytes after the close frame",
        rest.len()
    );
    assert_eq!(end, StreamEnd::Eof);
    assert!(
        ended_after > Duration::from_millis(700) && ended_after < Duration::from_secs(3),
        "the connection ended {ended_after:?} after the close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_answer_or_talk_stay_open() {
    let server = Server::start(&["--ping-interval", "1", "--idle-timeout", "2"]);
    let run_for = Duration::from_secs(5);

    // Answers every ping with a pong, and says nothing else.
    let mut ponger = RawWs::connect(server.addr, "/").await;
    let ponger = tokio::spawn(async move {
        let started = Instant::now();
        let mut pings = 0;
        while let Ok(frame) = timeout(
            run_for.saturating_sub(started.elapsed()),
            ponger.reader.read_frame(),
        )
        .await
        {
            let frame = frame.expect("read").expect("the connection stays open");
            match frame.opcode {
                OP_PING => {
                    pings += 1;
                    ponger.send(OutFrame::pong(frame.payload)).await;
                }
                _ => panic!("the ponger got {}", frame.describe()),
            }
        }
        assert!(pings >= 3, "only {pings} pings in {run_for:?}");
        ponger
    });

    // Never answers pings, but sends a message every 500 ms (any frame counts as life).
    let mut talker = RawWs::connect(server.addr, "/").await;
    let talker = tokio::spawn(async move {
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < run_for {
            talker.send(OutFrame::text(format!("still here {n}"))).await;
            let echo = talker.recv_skipping_pings(Duration::from_secs(2)).await;
            assert_eq!(echo.opcode, OP_TEXT, "the talker got {}", echo.describe());
            assert_eq!(echo.text(), format!("still here {n}"));
            n += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        talker
    });

    // A library client, reading all along: it answers pings by itself.
    let mut library = connect_ready(server.addr, "/", None).await;
    let library = tokio::spawn(async move {
        let started = Instant::now();
        let mut pings = 0;
        while let Ok(message) =
            timeout(run_for.saturating_sub(started.elapsed()), library.next()).await
        {
            match message {
                Some(Ok(Message::Ping(_))) => pings += 1,
                other => panic!("the library client got {other:?}"),
            }
        }
        assert!(pings >= 3, "only {pings} pings in {run_for:?}");
        library
    });

    // After 5 s (over twice the idle timeout), all three still work.
    let mut ponger = ponger.await.expect("ponger");
    let mut talker = talker.await.expect("talker");
    let mut library = library.await.expect("library client");
    for ws in [&mut ponger, &mut talker] {
        ws.send(OutFrame::text("after 5 s")).await;
        let echo = ws.recv_skipping_pings(Duration::from_secs(2)).await;
        assert_eq!(
            (echo.opcode, echo.text()),
            (OP_TEXT, "after 5 s"),
            "{}",
            echo.describe()
        );
    }
    library.send(Message::text("after 5 s")).await.unwrap();
    loop {
        match timeout(Duration::from_secs(2), library.next())
            .await
            .expect("echo")
        {
            Some(Ok(Message::Ping(_))) => {}
            Some(Ok(Message::Text(text))) => {
                assert_eq!(text, "after 5 s");
                break;
            }
            other => panic!("the library client got {other:?}"),
        }
    }
}

/// A peer that neither reads nor sends, while the instance it is in floods: its socket buffers
/// fill, so the server cannot even write the idle close frame. It must end the connection anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_connection_is_ended_although_nothing_can_be_written_to_it() {
    let server = Server::start(&[
        "--idle-timeout",
        "2",
        "--close-timeout",
        "1",
        "--max-backlog",
        "64KiB",
        "--slow-consumer",
        "drop",
    ]);
    let test = async {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stuck = RawWs::connect_socket(
            socket,
            server.addr,
            "/?mirror=stuck",
            &[("Sec-WebSocket-Protocol", "lws-mirror-protocol")],
        )
        .await;
        stuck.send(OutFrame::ping("joined?")).await;
        assert_eq!(stuck.recv(Duration::from_secs(5)).await.text(), "joined?");
        // From here on the stuck client neither reads nor sends.
        let silent_since = Instant::now();
        let (pid, port, client_port) =
            (server.pid(), server.addr.port(), stuck.local_addr().port());

        // Another member floods the instance, one message at a time (waiting for its own echo, so
        // it never goes over its own backlog): 400 × 32 KiB = 12.5 MiB.
        let mut flooder = join_mirror(server.addr, Some("stuck")).await;
        let payload = Bytes::from(vec![b'f'; 32 * 1024]);
        for n in 0..400 {
            flooder
                .send(Message::Binary(payload.clone()))
                .await
                .unwrap();
            loop {
                match timeout(Duration::from_secs(5), flooder.next())
                    .await
                    .expect("echo")
                {
                    Some(Ok(Message::Binary(data))) if data.len() == payload.len() => break,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => panic!("flooder, message {n}: got {other:?}"),
                }
            }
        }
        let jammed = server_socket_for(pid, port, client_port).expect("server-side socket");
        println!(
            "flood done {:?} after the stuck client went silent; {} bytes unsent to it",
            silent_since.elapsed(),
            jammed.tx_queue
        );
        // Jammed: the server's socket holds bytes the client's full window does not take, and
        // the server's own queue for it went over --max-backlog (so the drop policy applied).
        assert!(
            jammed.tx_queue >= 16 * 1024,
            "the stuck client's socket should be full: {jammed:?}"
        );
        assert!(
            server
                .log()
                .iter()
                .any(|line| line.contains("slow consumer") && line.contains("dropping")),
            "the stuck client should have gone over its backlog"
        );

        // Without any help from the stuck client, the server lets go of its connection.
        let released_after = wait_until_server_lets_go(
            pid,
            port,
            client_port,
            silent_since,
            Duration::from_secs(10),
            "the stuck connection, after it went silent,",
        )
        .await;
        println!("the server closed the stuck connection {released_after:?} after it went silent");
        assert!(
            released_after >= Duration::from_millis(1900),
            "closed before the idle timeout: {released_after:?}"
        );

        // When the client finally reads, it gets what was in flight, then the end.
        let (bytes, end) = stuck
            .reader
            .drain_to_end(Duration::from_secs(5))
            .await
            .expect("the stuck connection reaches its end within 5 s of reading");
        println!("stuck client read {bytes} bytes, then {end:?}");
    };
    timeout(Duration::from_secs(30), test)
        .await
        .expect("the test completes within 30 s");
}
