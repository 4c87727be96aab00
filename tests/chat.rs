//! The `chat` protocol end to end, on two workers (clients land on both): joining (members,
//! presence), saying (ids, epoch, time; every member, no other room), nick changes, every error
//! code with the connection still usable after it, the per-connection limits, recovery of
//! missed messages across a reconnect (and its failure past the history window or with another
//! epoch), unique increasing ids under concurrent senders, no gap or duplicate for a client
//! joining while messages flow, and presence `leave` when a connection drops.

mod support;

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{
    chat_client::{id, ChatClient as Client},
    Server,
};
use tokio::{task::JoinSet, time::timeout};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue, Message};

/// How long a whole test may take.
const TEST: Duration = Duration::from_secs(90);

/// Runs a test body within [`TEST`].
async fn bounded(body: impl Future<Output = ()>) {
    timeout(TEST, body)
        .await
        .expect("the test finishes in time");
}

fn start(extra: &[&str]) -> Server {
    let mut args = vec!["--workers", "2"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn texts(events: &Value) -> Vec<&str> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn joining_answers_with_the_members_and_tells_the_others() {
    bounded(async {
        let server = start(&[]);
        let mut ann = Client::connect(server.addr).await;
        let joined = ann.join("lobby", "ann").await;
        assert_eq!(joined["members"], json!(["ann"]));
        assert_eq!(joined["nick"], "ann");
        assert_eq!(joined["last_id"], 0);
        assert_eq!(joined["history"], json!([]));
        assert_eq!(joined["recovered"], false);
        let epoch = joined["epoch"].as_str().unwrap().to_owned();
        assert!(!epoch.is_empty());

        let mut bob = Client::connect(server.addr).await;
        let joined = bob.join("lobby", "bob").await;
        assert_eq!(joined["members"], json!(["ann", "bob"]));
        assert_eq!(joined["epoch"], epoch, "one room, one epoch");
        let presence = ann.next().await;
        assert_eq!(
            presence,
            json!({"type": "presence", "room": "lobby", "event": "join", "nick": "bob"})
        );

        // Another room is another epoch.
        let other = bob.join("elsewhere", "bob").await;
        assert_ne!(other["epoch"], epoch);

        // Leaving: `left` for the leaver, presence for the others, and it no longer may speak.
        bob.send(json!({"type": "leave", "room": "lobby"})).await;
        assert_eq!(
            bob.next_of("left").await,
            json!({"type": "left", "room": "lobby"})
        );
        assert_eq!(
            ann.next().await,
            json!({"type": "presence", "room": "lobby", "event": "leave", "nick": "bob"})
        );
        bob.say("lobby", "hello?").await;
        bob.expect_error("not_in_room").await;
        ann.expect_silence(Duration::from_millis(300)).await;
    })
    .await;
}

#[tokio::test]
async fn messages_reach_every_member_on_both_workers_and_no_other_room() {
    bounded(async {
        let server = start(&[]);
        let mut members = Vec::new();
        for n in 0..6 {
            let mut client = Client::connect(server.addr).await;
            client.join("r", &format!("m{n}")).await;
            members.push(client);
        }
        let mut outsiders = Vec::new();
        for n in 0..2 {
            let mut client = Client::connect(server.addr).await;
            client.join("other", &format!("o{n}")).await;
            outsiders.push(client);
        }
        let before = now_ms();
        for (n, member) in members.iter_mut().enumerate() {
            member.say("r", &format!("hello from m{n}")).await;
        }
        let mut sequences = Vec::new();
        for member in &mut members {
            let mut events = Vec::new();
            for _ in 0..6 {
                events.push(member.next_message("r").await);
            }
            let after = now_ms();
            for pair in events.windows(2) {
                assert!(id(&pair[1]) > id(&pair[0]), "ids increase");
                assert_eq!(pair[1]["epoch"], pair[0]["epoch"], "one epoch");
            }
            for event in &events {
                let ts = event["ts"].as_u64().unwrap();
                assert!(before <= ts && ts <= after, "ts {ts} is the server's time");
            }
            let mut nicks: Vec<&str> = events.iter().map(|e| e["nick"].as_str().unwrap()).collect();
            nicks.sort_unstable();
            assert_eq!(nicks, ["m0", "m1", "m2", "m3", "m4", "m5"]);
            let sequence: Vec<(u64, String)> = events
                .iter()
                .map(|event| (id(event), event["text"].as_str().unwrap().to_owned()))
                .collect();
            sequences.push(sequence);
        }
        assert!(
            sequences.windows(2).all(|pair| pair[0] == pair[1]),
            "every member sees the same messages under the same ids, in the same order"
        );
        for outsider in &mut outsiders {
            // Only presence events of "other" itself (the second outsider's join), never "r".
            while let Ok(Some(Ok(Message::Text(text)))) =
                timeout(Duration::from_millis(300), outsider.ws.next()).await
            {
                let event: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(event["room"], "other", "leaked: {event}");
                assert_ne!(event["type"], "message", "leaked: {event}");
            }
        }
    })
    .await;
}

#[tokio::test]
async fn ids_are_consecutive_and_shared_by_all_members() {
    bounded(async {
        let server = start(&[]);
        let mut ann = Client::connect(server.addr).await;
        let mut bob = Client::connect(server.addr).await;
        ann.join("r", "ann").await;
        bob.join("r", "bob").await;
        ann.next_of("presence").await;
        for n in 0..10u64 {
            let speaker = if n % 2 == 0 { &mut ann } else { &mut bob };
            speaker.say("r", &n.to_string()).await;
            for client in [&mut ann, &mut bob] {
                let event = client.next_message("r").await;
                assert_eq!(id(&event), n + 1);
                assert_eq!(event["text"], n.to_string());
                assert_eq!(event["nick"], if n % 2 == 0 { "ann" } else { "bob" });
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_nick_change_reaches_the_rooms_and_later_messages() {
    bounded(async {
        let server = start(&[]);
        let mut ann = Client::connect(server.addr).await;
        let mut bob = Client::connect(server.addr).await;
        ann.join("r", "ann").await;
        bob.join("r", "bob").await;
        ann.next_of("presence").await;

        ann.send(json!({"type": "nick", "nick": "anna"})).await;
        assert_eq!(
            bob.next().await,
            json!({"type": "nick", "room": "r", "old": "ann", "new": "anna"})
        );
        // The changer sees the room's event and its own confirmation (no room).
        let mut seen = vec![ann.next().await, ann.next().await];
        seen.sort_by_key(|event| event.get("room").is_some());
        assert_eq!(
            seen,
            [
                json!({"type": "nick", "old": "ann", "new": "anna"}),
                json!({"type": "nick", "room": "r", "old": "ann", "new": "anna"}),
            ]
        );

        ann.say("r", "it's me").await;
        assert_eq!(bob.next_message("r").await["nick"], "anna");
        let mut cy = Client::connect(server.addr).await;
        assert_eq!(
            cy.join("r", "cy").await["members"],
            json!(["anna", "bob", "cy"])
        );

        // A join without a nick uses the connection's; one with another nick renames it.
        let joined = ann
            .join_with(json!({"type": "join", "room": "second"}))
            .await;
        assert_eq!(joined["nick"], "anna");
        let joined = ann.join("third", "ann2").await;
        assert_eq!(joined["members"], json!(["ann2"]));
        assert_eq!(
            bob.next_of("nick").await,
            json!({"type": "nick", "room": "r", "old": "anna", "new": "ann2"})
        );
    })
    .await;
}

#[tokio::test]
async fn each_mistake_is_an_error_event_and_the_connection_stays_usable() {
    bounded(async {
        let server = start(&[
            "--chat-max-text",
            "16",
            "--chat-max-nick",
            "4",
            "--chat-rate",
            "1000",
            "--chat-burst",
            "1000",
        ]);
        let mut client = Client::connect(server.addr).await;

        client.send(json!({"type": "join", "room": "r"})).await;
        client.expect_error("nick_required").await;
        client
            .send(json!({"type": "join", "room": "r", "nick": "toolong"}))
            .await;
        client.expect_error("nick_too_long").await;
        client
            .send(json!({"type": "join", "room": "r", "nick": " "}))
            .await;
        client.expect_error("bad_nick").await;
        client
            .send(json!({"type": "join", "room": "", "nick": "ann"}))
            .await;
        client.expect_error("bad_room").await;
        client.say("r", "before joining").await;
        client.expect_error("not_in_room").await;

        client.join("r", "ann").await;
        client.assert_usable("r").await;

        let cases: &[(&str, &str)] = &[
            ("{\"type\": \"say\", ", "bad_json"),
            ("hello", "bad_json"),
            (r#"{"type":"dance","room":"r"}"#, "unknown_type"),
            (r#"{"type":"say","room":"r"}"#, "bad_request"),
            (
                r#"{"type":"say","room":"r","text":"x","colour":"red"}"#,
                "bad_request",
            ),
            (
                r#"{"type":"say","room":"r","text":"seventeen bytes!!"}"#,
                "text_too_long",
            ),
            (r#"{"type":"nick","nick":"fiver"}"#, "nick_too_long"),
            (r#"{"type":"join","room":"r"}"#, "already_in_room"),
            (r#"{"type":"leave","room":"nowhere"}"#, "not_in_room"),
        ];
        for (request, code) in cases {
            client.send_text(request).await;
            let error = client.expect_error(code).await;
            assert_eq!(error.as_object().unwrap().len(), 3, "{error}");
            client.assert_usable("r").await;
        }

        client
            .ws
            .send(Message::Binary(vec![1, 2, 3].into()))
            .await
            .unwrap();
        client.expect_error("binary_frame").await;
        client.assert_usable("r").await;

        let huge = json!({"type": "say", "room": "r", "text": "x".repeat(100_000)});
        client.send(huge).await;
        client.expect_error("too_large").await;
        client.assert_usable("r").await;

        // Exactly at the limits is fine; nick length counts characters, not bytes.
        client.send(json!({"type": "nick", "nick": "éééé"})).await;
        assert_eq!(client.next_of("nick").await["new"], "éééé");
        client.say("r", &"y".repeat(16)).await;
        assert_eq!(client.next_message("r").await["text"], "y".repeat(16));
    })
    .await;
}

#[tokio::test]
async fn a_connection_is_in_at_most_max_rooms() {
    bounded(async {
        let server = start(&["--chat-max-rooms", "2"]);
        let mut client = Client::connect(server.addr).await;
        client.join("a", "ann").await;
        client.join("b", "ann").await;
        client
            .send(json!({"type": "join", "room": "c", "nick": "ann"}))
            .await;
        client.expect_error("too_many_rooms").await;
        client.assert_usable("a").await;
        client.send(json!({"type": "leave", "room": "a"})).await;
        client.next_of("left").await;
        client.join("c", "ann").await;
        client.assert_usable("c").await;
    })
    .await;
}

#[tokio::test]
async fn sending_faster_than_the_rate_is_refused_then_allowed_again() {
    bounded(async {
        let server = start(&["--chat-rate", "1", "--chat-burst", "2"]);
        let mut client = Client::connect(server.addr).await;
        // The join and the first say use the burst of 2; the next two exceed it.
        client
            .send(json!({"type": "join", "room": "r", "nick": "ann"}))
            .await;
        for n in 1..=3 {
            client.say("r", &n.to_string()).await;
        }
        // Errors are answered at once, room events come from the owner: order them by kind.
        let mut events = Vec::new();
        while events.len() < 4 {
            let event = client.next().await;
            if event["type"] != "presence" {
                events.push(event);
            }
        }
        let mut kinds: Vec<&str> = events
            .iter()
            .map(|event| {
                if event["type"] == "error" {
                    event["code"].as_str().unwrap()
                } else {
                    event["type"].as_str().unwrap()
                }
            })
            .collect();
        kinds.sort_unstable();
        assert_eq!(kinds, ["joined", "message", "rate_limited", "rate_limited"]);
        let message = events
            .iter()
            .find(|event| event["type"] == "message")
            .unwrap();
        assert_eq!(message["text"], "1");

        // One token comes back per second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        client.assert_usable("r").await;
    })
    .await;
}

#[tokio::test]
async fn a_client_that_reconnects_gets_exactly_what_it_missed() {
    bounded(async {
        let server = start(&[]);
        let mut ann = Client::connect(server.addr).await;
        let mut bob = Client::connect(server.addr).await;
        ann.join("r", "ann").await;
        bob.join("r", "bob").await;
        bob.say("r", "seen by ann").await;
        let seen = ann.next_message("r").await;
        let (last_seen, epoch) = (id(&seen), seen["epoch"].clone());
        bob.next_message("r").await;

        ann.ws.close(None).await.unwrap();
        drop(ann);
        assert_eq!(bob.next_of("presence").await["event"], "leave");
        for text in ["one", "two", "three"] {
            bob.say("r", text).await;
            bob.next_message("r").await;
        }

        let mut ann = Client::connect(server.addr).await;
        let joined = ann
            .join_with(json!({
                "type": "join", "room": "r", "nick": "ann",
                "since": last_seen, "epoch": epoch,
            }))
            .await;
        assert_eq!(joined["recovered"], true, "{joined}");
        assert_eq!(joined["epoch"], epoch);
        assert_eq!(texts(&joined["history"]), ["one", "two", "three"]);
        let ids: Vec<u64> = joined["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(id)
            .collect();
        assert_eq!(ids, [last_seen + 1, last_seen + 2, last_seen + 3]);
        assert_eq!(joined["last_id"], last_seen + 3);
        assert_eq!(joined["members"], json!(["bob", "ann"]));

        // Live messages continue right after the recovered ones.
        bob.say("r", "four").await;
        let live = ann.next_message("r").await;
        assert_eq!(
            (id(&live), live["text"].as_str()),
            (last_seen + 4, Some("four"))
        );

        // Already up to date: recovered, nothing to replay.
        let mut cy = Client::connect(server.addr).await;
        let joined = cy
            .join_with(json!({
                "type": "join", "room": "r", "nick": "cy",
                "since": last_seen + 4, "epoch": epoch,
            }))
            .await;
        assert_eq!(joined["recovered"], true);
        assert_eq!(joined["history"], json!([]));
    })
    .await;
}

#[tokio::test]
async fn recovery_fails_past_the_history_window_or_with_another_epoch() {
    bounded(async {
        let server = start(&["--history", "2"]);
        let mut ann = Client::connect(server.addr).await;
        let mut bob = Client::connect(server.addr).await;
        ann.join("r", "ann").await;
        bob.join("r", "bob").await;
        bob.say("r", "seen").await;
        let seen = ann.next_message("r").await;
        let (last_seen, epoch) = (id(&seen), seen["epoch"].clone());
        drop(ann);
        assert_eq!(bob.next_of("presence").await["event"], "leave");
        for n in 1..=5 {
            bob.say("r", &format!("missed {n}")).await;
            bob.next_message("r").await;
        }

        let mut ann = Client::connect(server.addr).await;
        let joined = ann
            .join_with(json!({
                "type": "join", "room": "r", "nick": "ann",
                "since": last_seen, "epoch": epoch,
            }))
            .await;
        assert_eq!(joined["recovered"], false, "{joined}");
        // What the room still has comes anyway: the last two.
        assert_eq!(texts(&joined["history"]), ["missed 4", "missed 5"]);
        assert_eq!(joined["last_id"], last_seen + 5);

        let mut cy = Client::connect(server.addr).await;
        let joined = cy
            .join_with(json!({
                "type": "join", "room": "r", "nick": "cy",
                "since": last_seen + 4, "epoch": "not-this-room's",
            }))
            .await;
        assert_eq!(joined["recovered"], false, "{joined}");
        assert_eq!(joined["epoch"], epoch);
    })
    .await;
}

/// Many clients sending at once from both workers: every receiver sees ids 1, 2, 3, … with no
/// duplicate and no gap, all receivers see the same message under the same id, and each
/// sender's messages keep their order.
#[tokio::test]
async fn concurrent_senders_never_share_an_id() {
    bounded(async {
        const SENDERS: usize = 4;
        const EACH: usize = 50;
        const TOTAL: usize = SENDERS * EACH;
        let server = start(&["--chat-rate", "100000", "--chat-burst", "100000"]);
        let mut clients = Vec::new();
        for n in 0..SENDERS + 2 {
            let mut client = Client::connect(server.addr).await;
            client.join("busy", &format!("c{n}")).await;
            clients.push(client);
        }
        let mut tasks = JoinSet::new();
        for (n, mut client) in clients.into_iter().enumerate() {
            tasks.spawn(async move {
                if n < SENDERS {
                    for k in 0..EACH {
                        client.say("busy", &format!("{n}:{k}")).await;
                    }
                }
                let mut received = Vec::new();
                while received.len() < TOTAL {
                    let event = client.next_message("busy").await;
                    received.push((id(&event), event["text"].as_str().unwrap().to_owned()));
                }
                received
            });
        }
        let mut by_id: HashMap<u64, String> = HashMap::new();
        let mut first_id = None;
        while let Some(received) = tasks.join_next().await {
            let received = received.unwrap();
            let start = *first_id.get_or_insert(received[0].0);
            let ids: Vec<u64> = received.iter().map(|(id, _)| *id).collect();
            let expected: Vec<u64> = (start..start + TOTAL as u64).collect();
            assert_eq!(
                ids, expected,
                "consecutive, no duplicate, same for everyone"
            );
            let mut next_k = [0; SENDERS];
            for (id, text) in received {
                assert_eq!(by_id.entry(id).or_insert_with(|| text.clone()), &text);
                let (sender, k) = text.split_once(':').unwrap();
                let sender: usize = sender.parse().unwrap();
                assert_eq!(k.parse::<usize>().unwrap(), next_k[sender], "sender order");
                next_k[sender] += 1;
            }
        }
    })
    .await;
}

/// Clients join (on both workers) while a sender floods the room: each sees `joined`, then the
/// messages right after its `last_id`, with no gap and no duplicate between the history and the
/// live ones, up to the flood's last message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_while_messages_flow_loses_and_repeats_nothing() {
    bounded(async {
        const JOINERS: u64 = 8;
        let server = start(&["--chat-rate", "100000", "--chat-burst", "100000"]);
        let mut flooder = Client::connect(server.addr).await;
        flooder.join("flow", "flood").await;
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let flood = tokio::spawn({
            let stop = stop.clone();
            let progress = progress.clone();
            async move {
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    sent += 1;
                    progress.store(sent, Ordering::Relaxed);
                    flooder.say("flow", &sent.to_string()).await;
                    tokio::task::yield_now().await;
                }
                flooder.say("flow", "end").await;
                // Read its copies up to the end before closing: closing a socket with unread
                // data resets the connection, and the server could lose "end".
                while flooder.next_message("flow").await["text"] != "end" {}
                sent
            }
        });
        let (joined_tx, mut joined_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut joiners = JoinSet::new();
        for n in 0..JOINERS {
            let url = server.ws_url("/");
            let joined_tx = joined_tx.clone();
            joiners.spawn(async move {
                tokio::time::sleep(Duration::from_millis(10 * n)).await;
                let mut request = url.into_client_request().unwrap();
                request
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("chat"));
                let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
                let mut client = Client { ws };
                let joined = client.join("flow", &format!("j{n}")).await;
                joined_tx.send(()).unwrap();
                let last_id = joined["last_id"].as_u64().unwrap();
                let history: Vec<u64> = joined["history"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(id)
                    .collect();
                if let Some(last) = history.last() {
                    assert_eq!(*last, last_id, "history ends at last_id");
                }
                assert!(
                    history.windows(2).all(|pair| pair[1] == pair[0] + 1),
                    "history has no gap: {history:?}"
                );
                let mut expected = last_id + 1;
                loop {
                    let event = client.next_message("flow").await;
                    assert_eq!(id(&event), expected, "joined at {last_id}");
                    if event["text"] == "end" {
                        return last_id;
                    }
                    assert_eq!(event["text"], expected.to_string());
                    expected += 1;
                }
            });
        }
        for _ in 0..JOINERS {
            joined_rx.recv().await.unwrap();
        }
        // Every `last_id` so far is at most the messages the flooder has begun to send; the
        // flood goes on until it has begun one more, so every join is inside the flood.
        let at_last_join = progress.load(Ordering::Relaxed);
        while progress.load(Ordering::Relaxed) <= at_last_join {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let sent = flood.await.unwrap();
        let mut join_points = Vec::new();
        while let Some(last_id) = joiners.join_next().await {
            join_points.push(last_id.unwrap());
        }
        join_points.sort_unstable();
        assert!(
            join_points.iter().all(|point| *point < sent),
            "every join happened during the flood: {join_points:?} of {sent}"
        );
        println!("joined at ids {join_points:?} of {sent}");
    })
    .await;
}

#[tokio::test]
async fn a_dropped_connection_leaves_its_rooms() {
    bounded(async {
        let server = start(&[]);
        let mut ann = Client::connect(server.addr).await;
        let mut bob = Client::connect(server.addr).await;
        ann.join("a", "ann").await;
        ann.join("b", "ann").await;
        bob.join("a", "bob").await;
        bob.join("b", "bob").await;
        // Gone without a close frame: the TCP connection just ends.
        drop(ann);
        let mut left = vec![bob.next_of("presence").await, bob.next_of("presence").await];
        left.sort_by(|x, y| x["room"].as_str().cmp(&y["room"].as_str()));
        assert_eq!(
            left,
            [
                json!({"type": "presence", "room": "a", "event": "leave", "nick": "ann"}),
                json!({"type": "presence", "room": "b", "event": "leave", "nick": "ann"}),
            ]
        );
        let mut cy = Client::connect(server.addr).await;
        assert_eq!(cy.join("a", "cy").await["members"], json!(["bob", "cy"]));
    })
    .await;
}

/// A backend's `POST /api/publish` to a chat room is a room message like any other: from
/// "server", with the room's next id, kept for recovery; a room nobody is in reaches nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_over_http_is_stamped_and_kept() {
    bounded(async {
        let server = start(&["--api-token", "t0ken"]);
        let mut ann = Client::connect(server.addr).await;
        let mut bob = Client::connect(server.addr).await;
        ann.join("news", "ann").await;
        bob.join("news", "bob").await;
        ann.say("news", "before").await;
        let before = id(&ann.next_message("news").await);
        bob.next_message("news").await;

        let http = reqwest::Client::new();
        let publish = |room: &str| {
            http.post(server.http_url("/api/publish"))
                .bearer_auth("t0ken")
                .json(&json!({"protocol": "chat", "room": room, "message": "from the backend"}))
                .send()
        };
        let answer: Value = publish("news").await.unwrap().json().await.unwrap();
        assert_eq!(answer, json!({"reached": 2}));
        let mut epoch = Value::Null;
        for client in [&mut ann, &mut bob] {
            let message = client.next_message("news").await;
            assert_eq!(message["nick"], "server", "{message}");
            assert_eq!(message["text"], "from the backend");
            assert_eq!(id(&message), before + 1);
            epoch = message["epoch"].clone();
        }

        // Kept in the history: a newcomer recovering from `before` gets it.
        let mut cat = Client::connect(server.addr).await;
        let joined = cat
            .join_with(json!({
                "type": "join", "room": "news", "nick": "cat", "since": before, "epoch": epoch,
            }))
            .await;
        assert_eq!(joined["recovered"], true, "{joined}");
        assert_eq!(texts(&joined["history"]), ["from the backend"]);

        let answer: Value = publish("empty-room").await.unwrap().json().await.unwrap();
        assert_eq!(answer, json!({"reached": 0}));
    })
    .await;
}
