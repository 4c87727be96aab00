//! Broadcast through `lws-mirror-protocol`, end to end, on two workers: every member of an
//! instance (`?mirror=NAME`) receives every message of every member, in each sender's order;
//! other instances receive none of them; 1,000 members spread over both workers all receive
//! everything; a member that vanishes without a close does not disturb the others.

mod support;

use std::time::{Duration, Instant};

use futures_util::{stream::SplitSink, SinkExt, StreamExt};
use support::{
    raw_ws::{OutFrame, RawWs, StreamEnd, OP_TEXT},
    ws_client::{join_mirror, parse_tag, raise_fd_limit, Ws},
    Server,
};
use tokio::{task::JoinSet, time::timeout};
use tokio_tungstenite::tungstenite::Message;

type Sink = SplitSink<Ws, Message>;

const ANSWER: Duration = Duration::from_secs(10);

async fn join(server: &Server, instance: Option<&str>) -> Ws {
    join_mirror(server.addr, instance).await
}

/// The next text message (pings and pongs skipped).
async fn next_text(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> String {
    loop {
        match timeout(ANSWER, ws.next())
            .await
            .expect("a message within 10 s")
        {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_an_instance_get_every_message_and_other_instances_none() {
    let server = Server::start(&["--workers", "2"]);
    let mut red = Vec::new();
    for _ in 0..4 {
        red.push(join(&server, Some("red")).await);
    }
    let mut blue = [
        join(&server, Some("blue")).await,
        join(&server, Some("blue")).await,
    ];
    let mut default = [join(&server, None).await, join(&server, None).await];

    // Every red member sends one message; each red member receives all four, its own included,
    // and in the order they were sent (one after the other, each waited for).
    let mut expected = Vec::new();
    for i in 0..red.len() {
        let text = format!("red message from member {i}");
        red[i].send(Message::text(text.clone())).await.unwrap();
        for member in red.iter_mut() {
            assert_eq!(next_text(member).await, text);
        }
        expected.push(text);
    }
    // Several in a row from one member arrive in order everywhere.
    for n in 0..20 {
        red[0]
            .send(Message::text(format!("burst {n}")))
            .await
            .unwrap();
    }
    for member in red.iter_mut() {
        for n in 0..20 {
            assert_eq!(next_text(member).await, format!("burst {n}"));
        }
    }

    // Blue and default members got none of that: the first message each sees is its own
    // instance's.
    blue[1].send(Message::text("blue hello")).await.unwrap();
    for member in blue.iter_mut() {
        assert_eq!(next_text(member).await, "blue hello");
    }
    default[0]
        .send(Message::text("default hello"))
        .await
        .unwrap();
    for member in default.iter_mut() {
        assert_eq!(next_text(member).await, "default hello");
    }
    // And the red members got neither of those: their next message is the next red one.
    red[3].send(Message::text("red again")).await.unwrap();
    for member in red.iter_mut() {
        assert_eq!(next_text(member).await, "red again");
    }

    // Binary messages are mirrored as binary.
    blue[0]
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    for member in blue.iter_mut() {
        let message = timeout(ANSWER, member.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(message, Message::binary(vec![1u8, 2, 3]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_members_get_every_message_in_order() {
    const MEMBERS: usize = 1000;
    const SENDERS: usize = 3;
    const PER_SENDER: usize = 50;
    let limit = raise_fd_limit(4096);
    assert!(
        limit >= MEMBERS as u64 + 100,
        "this test needs {} open files, the limit is {limit}",
        MEMBERS + 100
    );
    let server = Server::start(&["--workers", "2"]);
    let started = Instant::now();

    let test = async {
        // Open the members concurrently, 100 at a time.
        let mut members: Vec<Ws> = Vec::with_capacity(MEMBERS);
        while members.len() < MEMBERS {
            let mut batch = JoinSet::new();
            for _ in 0..100.min(MEMBERS - members.len()) {
                batch.spawn(join_mirror(server.addr, Some("crowd")));
            }
            while let Some(ws) = batch.join_next().await {
                members.push(ws.expect("join task"));
            }
        }
        let joined_in = started.elapsed();

        // Every member reads until it has every message, checking each sender's order.
        let mut sinks: Vec<Sink> = Vec::with_capacity(MEMBERS);
        let mut readers = JoinSet::new();
        for (index, ws) in members.into_iter().enumerate() {
            let (sink, mut stream) = ws.split();
            sinks.push(sink);
            readers.spawn(async move {
                let mut next_seq = [0usize; SENDERS];
                let mut received = 0;
                while received < SENDERS * PER_SENDER {
                    let text = match stream.next().await {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        other => {
                            return Err(format!(
                                "member {index}: after {received} messages got {other:?}"
                            ))
                        }
                    };
                    let (sender, seq) = parse_tag(&text)
                        .ok_or_else(|| format!("member {index}: unexpected message {text:?}"))?;
                    if seq != next_seq[sender] {
                        return Err(format!(
                            "member {index}: from sender {sender} expected seq {}, got {seq}",
                            next_seq[sender]
                        ));
                    }
                    next_seq[sender] += 1;
                    received += 1;
                }
                Ok(index)
            });
        }

        // The first members send, concurrently.
        let send_started = Instant::now();
        let mut senders = JoinSet::new();
        for (sender, mut sink) in sinks.drain(..SENDERS).enumerate() {
            senders.spawn(async move {
                for seq in 0..PER_SENDER {
                    sink.send(Message::text(format!("sender-{sender} seq-{seq}")))
                        .await
                        .expect("send");
                }
                sink
            });
        }
        let mut kept_sinks = Vec::new();
        while let Some(sink) = senders.join_next().await {
            kept_sinks.push(sink.expect("sender task"));
        }

        let mut complete = 0;
        let mut failures = Vec::new();
        while let Some(result) = readers.join_next().await {
            match result.expect("reader task") {
                Ok(_) => complete += 1,
                Err(failure) => failures.push(failure),
            }
        }
        let delivered_in = send_started.elapsed();
        println!(
            "{MEMBERS} members joined in {joined_in:?}; {} messages delivered to all in {delivered_in:?}",
            SENDERS * PER_SENDER
        );
        assert!(
            failures.is_empty(),
            "{} members failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert_eq!(complete, MEMBERS);
        drop(kept_sinks);
        drop(sinks);
    };
    timeout(Duration::from_secs(60), test)
        .await
        .expect("the broadcast completes within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_vanishes_does_not_disturb_the_others() {
    let server = Server::start(&["--workers", "2"]);
    let mut members = Vec::new();
    for _ in 0..4 {
        members.push(join(&server, Some("room")).await);
    }
    // Two members that will vanish without a close frame: one ends TCP with FIN, one with RST.
    let mut vanishing = Vec::new();
    for reset in [false, true] {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if reset {
            socket.set_zero_linger().unwrap();
        }
        let mut raw = RawWs::connect_socket(
            socket,
            server.addr,
            "/?mirror=room",
            &[("Sec-WebSocket-Protocol", "lws-mirror-protocol")],
        )
        .await;
        raw.send(OutFrame::ping("joined?")).await;
        assert_eq!(raw.recv(ANSWER).await.text(), "joined?");
        vanishing.push(raw);
    }

    let (mut sender_sink, mut sender_stream) = members.remove(0).split();
    for n in 0..100 {
        if n == 30 {
            // They vanish mid-stream, with messages unread in their sockets.
            vanishing.clear();
        }
        sender_sink
            .send(Message::text(format!("message {n}")))
            .await
            .unwrap();
        if n % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for n in 0..100 {
        assert_eq!(next_text(&mut sender_stream).await, format!("message {n}"));
    }
    for (index, member) in members.iter_mut().enumerate() {
        for n in 0..100 {
            assert_eq!(
                next_text(member).await,
                format!("message {n}"),
                "member {index}"
            );
        }
    }

    // The instance still works for a newcomer, and the server is still up.
    let mut newcomer = join(&server, Some("room")).await;
    members[0].send(Message::text("welcome")).await.unwrap();
    assert_eq!(next_text(&mut newcomer).await, "welcome");
    for member in members.iter_mut() {
        assert_eq!(next_text(member).await, "welcome");
    }
    assert_eq!(next_text(&mut sender_stream).await, "welcome");
    let mut server = server;
    assert!(server.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_closing_mid_stream_gets_its_close_answer_last() {
    let server = Server::start(&["--workers", "2"]);
    let mut leaver = RawWs::connect_with(
        server.addr,
        "/?mirror=busy",
        &[("Sec-WebSocket-Protocol", "lws-mirror-protocol")],
    )
    .await;
    leaver.send(OutFrame::ping("joined?")).await;
    assert_eq!(leaver.recv(ANSWER).await.text(), "joined?");
    let sender = join(&server, Some("busy")).await;

    // The sender keeps the instance busy while the leaver closes (2,000 × ~100 bytes: well under
    // the 1 MiB backlog limit, so the leaver is never a slow consumer).
    let (mut sink, mut stream) = sender.split();
    let flood = tokio::spawn(async move {
        for n in 0..2000 {
            sink.send(Message::text(format!("busy {n:04} {}", "x".repeat(90))))
                .await
                .expect("send");
        }
        for n in 0..2000 {
            assert!(next_text(&mut stream)
                .await
                .starts_with(&format!("busy {n:04}")));
        }
    });

    let mut received = 0;
    while received < 100 {
        let frame = leaver.recv(ANSWER).await;
        assert_eq!(frame.opcode, OP_TEXT, "{}", frame.describe());
        assert!(frame.text().starts_with(&format!("busy {received:04}")));
        received += 1;
    }
    leaver.send(OutFrame::close(1000, "leaving")).await;
    // Messages already queued may still come, in order, then the close answer, then nothing.
    let close = loop {
        let frame = leaver.recv(ANSWER).await;
        if frame.is_close() {
            break frame;
        }
        assert_eq!(
            frame.opcode,
            OP_TEXT,
            "after the close: {}",
            frame.describe()
        );
        assert!(
            frame.text().starts_with(&format!("busy {received:04}")),
            "after the close: {}",
            frame.describe()
        );
        received += 1;
    };
    assert_eq!(close.close_code(), Some(1000));
    let (rest, end) = leaver.reader.read_to_end(ANSWER).await;
    assert!(
        rest.is_empty(),
        "{} bytes after the close frame",
        rest.len()
    );
    assert_eq!(end, StreamEnd::Eof);
    println!("the leaver got {received} messages, then the close");
    timeout(Duration::from_secs(30), flood)
        .await
        .expect("the sender gets all its messages back")
        .expect("sender task");
}

/// `--write-coalesce` applies only when the load chooses it: at light load every broadcast goes
/// out at the end of the turn that queued it, even one right after another and with the longest
/// window allowed, a second (the window only applies above `BUSY_DELIVERIES_PER_S`, see `flush.rs`, whose
/// unit tests cover the windowed passes). Before the load chose it, every broadcast but the
/// first after a quiet window waited for its member's next pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_broadcasts_go_out_at_once_whatever_the_window() {
    let window = Duration::from_secs(1);
    let server = Server::start(&["--workers", "1", "--write-coalesce", "1s"]);
    let mut sender = join(&server, Some("window")).await;
    let mut member = join(&server, Some("window")).await;

    let mut texts = Vec::new();
    for n in 0..4 {
        let text = format!("message {n}");
        let sent = Instant::now();
        sender.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(next_text(&mut member).await, text);
        let took = sent.elapsed();
        assert!(
            took < window / 4,
            "broadcast {n} at light load took {took:?} (window {window:?})"
        );
        texts.push(text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The sender is a member too, and got the same, in the same order.
    for text in texts {
        assert_eq!(next_text(&mut sender).await, text);
    }
}
