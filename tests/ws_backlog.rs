//! The stalled reader, end to end: one member of a mirror instance never reads its socket while
//! about 200 MiB go through the instance. The server must keep its memory bounded (it queues at
//! most `--max-backlog` for that member), apply the slow-consumer policy (close with 1008, or
//! drop its messages), and keep delivering everything, in order, to the members that read.

mod support;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use support::{
    raw_ws::{OutFrame, RawWs, OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT},
    ws_client::{join_mirror, rss_kib, server_socket_for, wait_until_server_lets_go, Ws},
    Server,
};
use tokio::{net::TcpSocket, time::timeout};
use tokio_tungstenite::tungstenite::Message;

const MESSAGE_SIZE: usize = 64 * 1024;
/// 3,200 × 64 KiB = 200 MiB through the instance.
const MESSAGES: usize = 3200;
/// Messages the sender may have ahead of the slowest reading member: 512 KiB, half the backlog
/// limit, so that only the stalled member ever goes over it.
const WINDOW: usize = 8;
const NORMAL_MEMBERS: usize = 3;
/// How much the server's resident memory may grow while 200 MiB pass through it.
const RSS_GROWTH_LIMIT_KIB: u64 = 32 * 1024;

/// Joins the mirror instance `flood` with a library client; returns once the session runs.
async fn join(server: &Server) -> Ws {
    join_mirror(server.addr, Some("flood")).await
}

/// Joins with a raw client whose receive buffer is tiny, and which the test will not read.
async fn join_stalled(server: &Server) -> RawWs {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut ws = RawWs::connect_socket(
        socket,
        server.addr,
        "/?mirror=flood",
        &[("Sec-WebSocket-Protocol", "lws-mirror-protocol")],
    )
    .await;
    ws.send(OutFrame::ping("joined?")).await;
    assert_eq!(ws.recv(Duration::from_secs(10)).await.text(), "joined?");
    ws
}

/// The flood's message number `seq`: 8 bytes of sequence number, then a pattern.
fn flood_message(seq: usize, template: &Bytes) -> Bytes {
    let mut data = template.to_vec();
    data[..8].copy_from_slice(&(seq as u64).to_be_bytes());
    Bytes::from(data)
}

fn seq_of(data: &[u8]) -> usize {
    u64::from_be_bytes(data[..8].try_into().unwrap()) as usize
}

#[derive(Debug)]
struct Figures {
    before_kib: u64,
    peak_kib: u64,
    after_kib: u64,
    took: Duration,
}

impl Figures {
    fn growth_kib(&self) -> u64 {
        self.peak_kib
            .max(self.after_kib)
            .saturating_sub(self.before_kib)
    }
}

/// Sends `MESSAGES` messages of `MESSAGE_SIZE` through the instance from `sender`, never more
/// than `WINDOW` ahead of the slowest of `members` (the sender's own echo counted too), and
/// checks that every member receives every message in order. Samples the server's RSS.
async fn flood(server: &Server, sender: Ws, members: Vec<Ws>) -> Figures {
    let pid = server.pid();
    let before_kib = rss_kib(pid);
    let peak = Arc::new(AtomicUsize::new(before_kib as usize));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid) as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let (mut sink, sender_stream) = sender.split();
    let mut streams = vec![sender_stream];
    streams.extend(members.into_iter().map(|ws| ws.split().1));
    let progress: Vec<Arc<AtomicUsize>> = (0..streams.len())
        .map(|_| Arc::new(AtomicUsize::new(0)))
        .collect();
    let mut readers = Vec::new();
    for (index, mut stream) in streams.into_iter().enumerate() {
        let progress = progress[index].clone();
        readers.push(tokio::spawn(async move {
            let mut next = 0;
            while next < MESSAGES {
                match stream.next().await {
                    Some(Ok(Message::Binary(data))) => {
                        if data.len() != MESSAGE_SIZE || seq_of(&data) != next {
                            return Err(format!(
                                "member {index}: expected message {next}, got seq {} of {} bytes",
                                seq_of(&data),
                                data.len()
                            ));
                        }
                        next += 1;
                        progress.store(next, Ordering::Release);
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => {
                        return Err(format!(
                            "member {index}: after {next} messages got {other:?}"
                        ))
                    }
                }
            }
            Ok(())
        }));
    }

    let started = Instant::now();
    let template = Bytes::from(
        (0..MESSAGE_SIZE)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    for seq in 0..MESSAGES {
        let wait_started = Instant::now();
        loop {
            let slowest = progress
                .iter()
                .map(|p| p.load(Ordering::Acquire))
                .min()
                .unwrap();
            if seq < slowest + WINDOW {
                break;
            }
            assert!(
                wait_started.elapsed() < Duration::from_secs(10),
                "members stopped receiving at message {slowest}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sink.send(Message::Binary(flood_message(seq, &template)))
            .await
            .expect("send");
    }
    for reader in readers {
        timeout(Duration::from_secs(20), reader)
            .await
            .expect("members receive everything within 20 s of the last send")
            .expect("reader task")
            .unwrap_or_else(|failure| panic!("{failure}"));
    }
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let after_kib = rss_kib(pid);
    Figures {
        before_kib,
        peak_kib: peak.load(Ordering::Relaxed) as u64,
        after_kib,
        took,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_is_closed_and_memory_stays_bounded() {
    let server = Server::start(&[
        "--workers",
        "2",
        "--max-backlog",
        "1MiB",
        "--close-timeout",
        "1",
    ]);
    let test = async {
        let mut stalled = join_stalled(&server).await;
        let mut members = Vec::new();
        for _ in 0..NORMAL_MEMBERS {
            members.push(join(&server).await);
        }
        let sender = join(&server).await;

        // (`flood` disconnects the sender and the members when it returns.)
        let figures = flood(&server, sender, members).await;
        println!(
            "close policy: {} MiB through the instance in {:?}; server RSS {} KiB before, peak {} KiB, {} KiB after (growth {} KiB)",
            (MESSAGES * MESSAGE_SIZE) >> 20,
            figures.took,
            figures.before_kib,
            figures.peak_kib,
            figures.after_kib,
            figures.growth_kib()
        );
        assert!(
            figures.growth_kib() < RSS_GROWTH_LIMIT_KIB,
            "server RSS grew by {} KiB",
            figures.growth_kib()
        );

        let log = server.log();
        let policy_line = log
            .iter()
            .find(|line| line.contains("slow consumer") && line.contains("1008"));
        assert!(
            policy_line.is_some(),
            "the log should say the slow consumer was closed with 1008: {:?}",
            &log[log.len().saturating_sub(20)..]
        );
        println!("log: {}", policy_line.unwrap());

        // The server lets go of the stalled connection on its own, although the client still
        // reads nothing: after the close timeout its socket is closed. (The kernel keeps it,
        // orphaned, until the unsent bytes are read or time out; see /proc/net/tcp.)
        let (pid, port, client_port) = (
            server.pid(),
            server.addr.port(),
            stalled.local_addr().port(),
        );
        let stuck = server_socket_for(pid, port, client_port).expect("the server-side socket");
        println!(
            "stalled member after the flood: server-side socket state {}, {} bytes unsent",
            stuck.state, stuck.tx_queue
        );
        let released = wait_until_server_lets_go(
            pid,
            port,
            client_port,
            Instant::now(),
            Duration::from_secs(10),
            "the stalled connection, after the flood,",
        )
        .await;
        println!("the server closed the stalled connection {released:?} after the flood");

        // Reading now, the stalled member gets what was in flight, then the end of the stream.
        let read_started = Instant::now();
        let ended = stalled.reader.drain_to_end(Duration::from_secs(10)).await;
        let (bytes, end) = ended.expect("the stalled connection ends within 10 s of reading");
        println!(
            "stalled member: {bytes} bytes were in flight, then {end:?} after {:?}",
            read_started.elapsed()
        );
    };
    timeout(Duration::from_secs(60), test)
        .await
        .expect("the test completes within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_under_the_drop_policy_loses_messages_but_not_its_connection() {
    let server = Server::start(&[
        "--workers",
        "2",
        "--max-backlog",
        "1MiB",
        "--slow-consumer",
        "drop",
        "--close-timeout",
        "1",
    ]);
    let test = async {
        let mut stalled = join_stalled(&server).await;
        let mut members = Vec::new();
        for _ in 0..NORMAL_MEMBERS {
            members.push(join(&server).await);
        }
        let sender = join(&server).await;

        let figures = flood(&server, sender, members).await;
        println!(
            "drop policy: {} MiB through the instance in {:?}; server RSS {} KiB before, peak {} KiB, {} KiB after (growth {} KiB)",
            (MESSAGES * MESSAGE_SIZE) >> 20,
            figures.took,
            figures.before_kib,
            figures.peak_kib,
            figures.after_kib,
            figures.growth_kib()
        );
        assert!(
            figures.growth_kib() < RSS_GROWTH_LIMIT_KIB,
            "server RSS grew by {} KiB",
            figures.growth_kib()
        );
        let log = server.log();
        assert!(
            log.iter()
                .any(|line| line.contains("slow consumer") && line.contains("dropping")),
            "the log should say the slow consumer's messages are dropped: {:?}",
            &log[log.len().saturating_sub(20)..]
        );
        assert!(
            !log.iter().any(|line| line.contains("1008")),
            "nothing is closed under the drop policy"
        );

        // The stalled member drains what was queued for it: an in-order subset of the flood
        // (the messages sent while it was over its backlog are missing), and no close frame.
        let mut received = 0;
        let mut last_seq = None;
        loop {
            let frame = match timeout(Duration::from_secs(1), stalled.reader.read_frame()).await {
                Err(_) => break, // drained: nothing more for a second
                Ok(Ok(Some(frame))) => frame,
                Ok(Ok(None)) => {
                    panic!("the stalled connection was ended after {received} messages")
                }
                Ok(Err(err)) => {
                    panic!("the stalled connection failed after {received} messages: {err}")
                }
            };
            match frame.opcode {
                OP_BINARY => {
                    let seq = seq_of(&frame.payload);
                    assert_eq!(frame.payload.len(), MESSAGE_SIZE);
                    assert!(
                        last_seq.is_none_or(|last| seq > last),
                        "message {seq} after {last_seq:?}"
                    );
                    last_seq = Some(seq);
                    received += 1;
                }
                OP_PING => {}
                OP_CLOSE => panic!(
                    "the stalled member was closed: {} {:?}",
                    frame.close_code().unwrap_or_default(),
                    frame.close_reason()
                ),
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
        println!("stalled member: drained {received} of {MESSAGES} messages (last {last_seq:?})");
        assert!(
            received > 0,
            "it should have got the messages queued before the limit"
        );
        assert!(
            received < MESSAGES,
            "some messages should have been dropped"
        );

        // Now that it has drained, new messages reach it again.
        let mut announcer = join(&server).await;
        announcer
            .send(Message::text("after the drain"))
            .await
            .unwrap();
        let frame = stalled.recv_skipping_pings(Duration::from_secs(5)).await;
        assert_eq!(frame.opcode, OP_TEXT, "{}", frame.describe());
        assert_eq!(frame.text(), "after the drain");
        // And it can still talk: its own message reaches the others.
        stalled.send(OutFrame::text("back from the dead")).await;
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match timeout(Duration::from_secs(5), announcer.next())
                .await
                .expect("message")
            {
                Some(Ok(Message::Text(text))) => seen.push(text.to_string()),
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("announcer got {other:?}"),
            }
        }
        assert_eq!(seen, ["after the drain", "back from the dead"]);
    };
    timeout(Duration::from_secs(60), test)
        .await
        .expect("the test completes within 60 s");
}

/// Joins mirror instance `room` with a raw client whose receive buffer is tiny (the test reads
/// it only when it chooses).
async fn join_small_window(server: &Server, room: &str) -> RawWs {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut ws = RawWs::connect_socket(
        socket,
        server.addr,
        &format!("/?mirror={room}"),
        &[("Sec-WebSocket-Protocol", "lws-mirror-protocol")],
    )
    .await;
    ws.send(OutFrame::ping("joined?")).await;
    assert_eq!(ws.recv(Duration::from_secs(10)).await.text(), "joined?");
    ws
}

/// Broadcasts queued for a member whose socket is filling up, several per write, reach it as
/// the frames they were. Each round's two messages (60,000 and 65,536 bytes) arrive within one
/// write window, so the server writes them to the socket together; the reader reads nothing
/// until every round is sent, so sooner or later the socket takes only part of such a write,
/// and the server's writer must put the rest on the wire as it is (it once framed a rest over
/// 64 KiB again, corrupting the stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_queued_behind_a_full_socket_reach_the_peer_intact() {
    // A backlog limit above everything sent: no slow-consumer policy here.
    let server = Server::start(&["--workers", "1", "--max-backlog", "64MiB"]);
    let mut reader = join_small_window(&server, "intact").await;
    let (mut sender, mut echoes) = join_mirror(server.addr, Some("intact")).await.split();
    // The sender reads its own copies, so that its socket never fills (the server reads a
    // connection's messages only while it can write to it).
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = echoes.next().await {} });
    const ROUNDS: usize = 48;
    let mut sent = Vec::new();
    for round in 0..ROUNDS {
        for (n, size) in [60_000, 65_536].into_iter().enumerate() {
            let mut payload = vec![(round * 2 + n) as u8; size];
            payload[..8].copy_from_slice(&(round as u64).to_be_bytes());
            sender
                .send(Message::Binary(Bytes::from(payload.clone())))
                .await
                .unwrap();
            sent.push(payload);
        }
        // Pacing, not waiting: the next round falls into the server's next write window.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (n, expected) in sent.iter().enumerate() {
        let frame = reader.recv(Duration::from_secs(10)).await;
        assert_eq!(
            (frame.fin, frame.rsv, frame.opcode, frame.payload.len()),
            (true, 0, OP_BINARY, expected.len()),
            "message {n}: {}",
            frame.describe()
        );
        assert!(frame.payload == *expected, "message {n}: payload differs");
    }
    drain.abort();
}

/// The peer closes while megabytes are still queued for it behind its full socket. The server's
/// answer comes after all of them, then its FIN: it half-closes the socket only once its last
/// bytes have left the HTTP layer's buffer (it once half-closed one turn after handing them
/// over, losing whatever a full socket had not taken yet, the close frame included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_to_a_close_behind_a_full_socket_still_arrives() {
    let server = Server::start(&["--workers", "1", "--max-backlog", "64MiB"]);
    let mut reader = join_small_window(&server, "closing").await;
    let (mut sender, mut echoes) = join_mirror(server.addr, Some("closing")).await.split();
    // 7.2 MB: more than the kernel buffers of the connection can hold.
    const MESSAGES: usize = 120;
    // The sender's own copies: once it has them all, every message is queued for the reader
    // too (one worker queues both in the same turn).
    let all_queued = tokio::spawn(async move {
        let mut count = 0;
        while let Some(Ok(message)) = echoes.next().await {
            count += usize::from(message.is_binary());
            if count == MESSAGES {
                return echoes;
            }
        }
        panic!("the sender's connection ended after {count} copies");
    });
    for n in 0..MESSAGES {
        let payload = vec![n as u8; 60_000];
        sender
            .send(Message::Binary(Bytes::from(payload)))
            .await
            .unwrap();
    }
    let mut echoes = timeout(Duration::from_secs(10), all_queued)
        .await
        .expect("the sender gets its copies")
        .unwrap();
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = echoes.next().await {} });
    // The reader's socket is full long before all of it is queued; it asks to close now.
    reader.send(OutFrame::close(1000, "bye")).await;
    for n in 0..MESSAGES {
        let frame = reader.recv(Duration::from_secs(10)).await;
        assert_eq!(
            (
                frame.opcode,
                frame.payload.len(),
                frame.payload.first().copied()
            ),
            (OP_BINARY, 60_000, Some(n as u8)),
            "message {n}: {}",
            frame.describe()
        );
        // Pacing, not waiting: a slow reader keeps the server's socket full to the end.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let answer = reader.recv(Duration::from_secs(10)).await;
    assert_eq!(answer.close_code(), Some(1000), "{}", answer.describe());
    let (rest, end) = reader.reader.read_to_end(Duration::from_secs(5)).await;
    assert!(
        rest.is_empty(),
        "{} bytes after the close frame",
        rest.len()
    );
    assert_eq!(end, support::raw_ws::StreamEnd::Eof);
    drain.abort();
}
