//! Several nodes serving one set of rooms through Redis (`--broker`), end to end: three
//! Switchboard processes and a real `redis-server` on loopback. Broadcasts reach every member on
//! every node once, in each sender's order, and only nodes with members get a room's traffic;
//! chat ids stay gapless across nodes, recovery works on another node, presence covers all nodes
//! and survives a node's death (SIGKILL: within the presence TTL; SIGTERM: at once); a broker
//! killed and restarted, or frozen, is noticed and recovered from; readiness waits for the
//! broker.
//!
//! They need `redis-server` (Debian's package) and skip with a message without it, unless
//! `SWITCHBOARD_REQUIRE_REDIS=1` (CI) makes that a failure.

mod support;

use std::{
    io::{BufReader, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use futures_util::{stream::SplitStream, SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{
    chat_client::{id, sorted_members, texts, ChatClient, ANSWER},
    cluster::{
        bounded, broker_status, counter, get, metric, poll, serial, start_node, status, Cluster,
        CHECK_INTERVAL, PRESENCE_TTL, RECONNECT,
    },
    redis::{command_within, free_port, read_reply, redis_server_or_skip, Redis, Resp},
    ws_client::{connect_ready, join_mirror, parse_tag, raise_fd_limit, Ws},
};
use tokio::{task::JoinSet, time::timeout};
use tokio_tungstenite::tungstenite::Message;

const NODES: usize = 3;
const TOKEN: &str = "cluster-t0ken";

/// The next text message within `limit` (pings and pongs skipped); `None` if none came.
async fn next_text_within(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
    limit: Duration,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(text)))) => return Some(text.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The next text message, within [`ANSWER`].
async fn next_text(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> String {
    next_text_within(ws, ANSWER)
        .await
        .expect("a message within 10 s")
}

/// Sends a text message.
async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).await.expect("send");
}

/// `POST /api/publish` on a node; the status and the answer.
async fn publish(node: &support::Server, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(node.http_url("/api/publish"))
        .bearer_auth(TOKEN)
        .json(&body)
        .timeout(ANSWER)
        .send()
        .await
        .expect("POST /api/publish");
    let code = response.status().as_u16();
    let text = response.text().await.expect("the answer");
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

// ---------------------------------------------------------------------------------------------
// Broadcast rooms

/// 1,000 `lws-mirror-protocol` members spread over three nodes, one sender on each node: every
/// member receives every message exactly once, each sender's in order; the broker handles a few
/// commands per broadcast, not one per member; and `POST /api/publish` on one node reaches the
/// members of all nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_every_member_on_every_node_once_in_each_senders_order() {
    const MEMBERS: usize = 1000;
    const PER_SENDER: usize = 50;
    let _serial = serial().await;
    let Some(redis) = Redis::start_or_skip("cluster broadcasts") else {
        return;
    };
    let limit = raise_fd_limit(4096);
    assert!(
        limit >= MEMBERS as u64 + 200,
        "this test needs {} open files, the limit is {limit}",
        MEMBERS + 200
    );
    bounded(Duration::from_secs(180), async {
        let cluster = Cluster::start(redis, NODES, &["--api-token", TOKEN]).await;
        let addrs: Vec<_> = cluster.nodes.iter().map(|node| node.addr).collect();

        // Member i is on node i % 3, so members 0, 1 and 2 (the senders) are on nodes 1, 2, 3.
        let started = Instant::now();
        let mut members: Vec<Option<Ws>> = (0..MEMBERS).map(|_| None).collect();
        let mut next = 0;
        while next < MEMBERS {
            let mut batch = JoinSet::new();
            for index in next..(next + 100).min(MEMBERS) {
                let addr = addrs[index % NODES];
                batch.spawn(async move { (index, join_mirror(addr, Some("crowd")).await) });
            }
            while let Some(joined) = batch.join_next().await {
                let (index, ws) = joined.expect("join task");
                members[index] = Some(ws);
            }
            next = (next + 100).min(MEMBERS);
        }
        println!("{MEMBERS} members joined in {:?}", started.elapsed());
        cluster.wait_channels(&[0, 1, 2], 1).await;

        let commands_before = cluster
            .redis
            .info_number("stats", "total_commands_processed");
        let send_started = Instant::now();
        let mut sinks = Vec::new();
        let mut readers = JoinSet::new();
        for (index, ws) in members.into_iter().enumerate() {
            let (sink, mut stream) = ws.unwrap().split();
            sinks.push(sink);
            readers.spawn(async move {
                let mut next_seq = [0usize; NODES];
                for received in 0..NODES * PER_SENDER {
                    let Some(text) = next_text_within(&mut stream, Duration::from_secs(30)).await
                    else {
                        return Err(format!(
                            "member {index} (node{}): nothing after {received} messages \
                             (next expected per sender: {next_seq:?})",
                            index % NODES + 1
                        ));
                    };
                    let (sender, seq) = parse_tag(&text)
                        .ok_or_else(|| format!("member {index}: unexpected message {text:?}"))?;
                    if seq != next_seq[sender] {
                        return Err(format!(
                            "member {index} (node{}): from sender {sender} expected seq {}, got \
                             {seq}",
                            index % NODES + 1,
                            next_seq[sender]
                        ));
                    }
                    next_seq[sender] += 1;
                }
                Ok((index, stream))
            });
        }
        let mut senders = JoinSet::new();
        for (sender, mut sink) in sinks.drain(..NODES).enumerate() {
            senders.spawn(async move {
                for seq in 0..PER_SENDER {
                    sink.send(Message::text(format!("sender-{sender} seq-{seq}")))
                        .await
                        .expect("send");
                }
                sink
            });
        }
        while let Some(sink) = senders.join_next().await {
            sinks.push(sink.expect("sender task"));
        }
        let mut streams: Vec<(usize, SplitStream<Ws>)> = Vec::new();
        let mut failures = Vec::new();
        while let Some(result) = readers.join_next().await {
            match result.expect("reader task") {
                Ok(done) => streams.push(done),
                Err(failure) => failures.push(failure),
            }
        }
        let delivered_in = send_started.elapsed();
        let commands = cluster
            .redis
            .info_number("stats", "total_commands_processed")
            - commands_before;
        let broadcasts = (NODES * PER_SENDER) as u64;
        println!(
            "{broadcasts} broadcasts delivered to {MEMBERS} members on {NODES} nodes in \
             {delivered_in:?}; the broker processed {commands} commands meanwhile"
        );
        assert!(
            failures.is_empty(),
            "{} of {MEMBERS} members failed, e.g. {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert_eq!(streams.len(), MEMBERS);
        // A node publishes a broadcast once, not once per member: a few commands per broadcast,
        // plus the nodes' own checks (generously, 20 commands per node and second).
        let checks = NODES as u64 * 20 * (delivered_in.as_secs() + 2);
        assert!(
            commands <= broadcasts * 5 + checks,
            "{commands} broker commands for {broadcasts} broadcasts"
        );

        // A publish over HTTP on node 2 reaches the members of every node. Each member's next
        // message is it: nothing was delivered twice above.
        let on_node2 = (0..MEMBERS).filter(|index| index % NODES == 1).count();
        let (code, answer) = publish(
            &cluster.nodes[1],
            json!({"protocol": "lws-mirror-protocol", "room": "crowd", "message": "from the api"}),
        )
        .await;
        assert_eq!(code, 200, "{answer}");
        assert_eq!(
            answer,
            json!({"reached": on_node2}),
            "reached counts node 2's members"
        );
        let mut readers = JoinSet::new();
        for (index, mut stream) in streams {
            readers.spawn(async move {
                match next_text_within(&mut stream, Duration::from_secs(30)).await {
                    Some(text) if text == "from the api" => Ok(()),
                    other => Err(format!(
                        "member {index} (node{}): got {other:?}",
                        index % NODES + 1
                    )),
                }
            });
        }
        let mut failures = Vec::new();
        while let Some(result) = readers.join_next().await {
            if let Err(failure) = result.expect("reader task") {
                failures.push(failure);
            }
        }
        assert!(
            failures.is_empty(),
            "{} members did not get the published message next, e.g. {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        drop(sinks);
    })
    .await;
}

/// Interest routing: with members of a room on nodes 1 and 2 only, node 3 holds no
/// subscription for it in Redis (its connections' subscriptions do not change), reports no
/// channel, and gets none of the room's traffic (its `unrouted` count stays); once a member
/// joins on node 3 it subscribes and gets the traffic, and when that member leaves it
/// unsubscribes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_members_of_a_room_gets_none_of_its_traffic() {
    let _serial = serial().await;
    let Some(redis) = Redis::start_or_skip("cluster interest routing") else {
        return;
    };
    bounded(Duration::from_secs(90), async {
        let cluster = Cluster::start(redis, NODES, &[]).await;
        let redis = &cluster.redis;
        let subscriptions = |node: usize| redis.subscriptions_of(cluster.nodes[node].pid());
        let baseline: Vec<(u64, usize)> = (0..NODES).map(subscriptions).collect();
        for (node, (_, connections)) in baseline.iter().enumerate() {
            assert!(
                *connections > 0,
                "node{} has a connection to Redis",
                node + 1
            );
        }
        let channels_before = redis.channels();

        let (node1, node2, node3) = (
            cluster.nodes[0].addr,
            cluster.nodes[1].addr,
            cluster.nodes[2].addr,
        );
        let mut members = [
            join_mirror(node1, Some("interest")).await,
            join_mirror(node1, Some("interest")).await,
            join_mirror(node2, Some("interest")).await,
            join_mirror(node2, Some("interest")).await,
        ];
        cluster.wait_channels(&[0, 1], 1).await;
        for node in [0, 1] {
            poll(
                Duration::from_secs(5),
                &format!("Redis holds a new subscription of node{}", node + 1),
                async || (subscriptions(node).0 > baseline[node].0).then_some(()),
            )
            .await;
        }
        let new_channels: Vec<String> = redis
            .channels()
            .into_iter()
            .filter(|channel| !channels_before.contains(channel))
            .collect();
        println!("channels of the room: {new_channels:?}");
        let broker3 = broker_status(&cluster.nodes[2]).await;
        assert_eq!(counter(&broker3, "channels"), 0, "node3: {broker3}");
        assert_eq!(
            subscriptions(2).0,
            baseline[2].0,
            "node3's subscriptions in Redis do not change"
        );
        let unrouted_before = counter(&broker3, "unrouted");

        for n in 0..100 {
            send_text(&mut members[0], &format!("interest {n}")).await;
        }
        for (index, member) in members.iter_mut().enumerate() {
            for n in 0..100 {
                assert_eq!(
                    next_text(member).await,
                    format!("interest {n}"),
                    "member {index}"
                );
            }
        }
        // Nothing is on its way to node 3 either: a moment later it still has no channel and
        // has received nothing it had to drop.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let broker3 = broker_status(&cluster.nodes[2]).await;
        assert_eq!(counter(&broker3, "channels"), 0, "node3: {broker3}");
        assert_eq!(counter(&broker3, "unrouted"), unrouted_before, "{broker3}");
        assert_eq!(subscriptions(2).0, baseline[2].0);

        // A member on node 3: now it subscribes and gets the traffic.
        let mut third = join_mirror(node3, Some("interest")).await;
        cluster.wait_channels(&[2], 1).await;
        assert!(subscriptions(2).0 > baseline[2].0, "node3 subscribed");
        send_text(&mut members[2], "now on three nodes").await;
        assert_eq!(next_text(&mut third).await, "now on three nodes");
        for member in members.iter_mut() {
            assert_eq!(next_text(member).await, "now on three nodes");
        }

        // It leaves: node 3 unsubscribes.
        let _ = third.close(None).await;
        drop(third);
        poll(
            Duration::from_secs(10),
            "node3 unsubscribes when its last member leaves",
            async || {
                let channels = counter(&broker_status(&cluster.nodes[2]).await, "channels");
                (channels == 0 && subscriptions(2).0 == baseline[2].0).then_some(())
            },
        )
        .await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Chat

/// A sender and a listener on each node, the senders all at once: every member receives the
/// same ids, consecutive with no duplicate, each id naming the same message everywhere, under
/// one epoch, and each sender's messages in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_ids_are_gapless_and_ordered_with_senders_on_every_node() {
    const EACH: usize = 40;
    const TOTAL: usize = NODES * EACH;
    let _serial = serial().await;
    let Some(redis) = Redis::start_or_skip("cluster chat ids") else {
        return;
    };
    bounded(Duration::from_secs(90), async {
        let cluster = Cluster::start(
            redis,
            NODES,
            &["--chat-rate", "100000", "--chat-burst", "100000"],
        )
        .await;
        let mut clients = Vec::new();
        for node in 0..NODES {
            for role in ["sender", "listener"] {
                let mut client = ChatClient::connect(cluster.nodes[node].addr).await;
                client.join("busy", &format!("{role}{node}")).await;
                clients.push((node, role == "sender", client));
            }
        }
        let mut tasks = JoinSet::new();
        for (node, sends, mut client) in clients {
            tasks.spawn(async move {
                if sends {
                    for k in 0..EACH {
                        client.say("busy", &format!("{node}:{k}")).await;
                    }
                }
                let mut received = Vec::new();
                while received.len() < TOTAL {
                    let event = client.next_message("busy").await;
                    received.push((
                        id(&event),
                        event["text"].as_str().unwrap().to_owned(),
                        event["epoch"].clone(),
                    ));
                }
                // Nothing more: no duplicates after the last.
                let extra = client
                    .next_in_room_within("message", "busy", Duration::from_millis(300))
                    .await;
                assert!(extra.is_none(), "node{}: extra message {extra:?}", node + 1);
                received
            });
        }
        let mut by_id = std::collections::HashMap::new();
        let mut first = None;
        while let Some(received) = tasks.join_next().await {
            let received = received.expect("client task");
            let (start, epoch) = first
                .get_or_insert_with(|| (received[0].0, received[0].2.clone()))
                .clone();
            let ids: Vec<u64> = received.iter().map(|(id, _, _)| *id).collect();
            let expected: Vec<u64> = (start..start + TOTAL as u64).collect();
            assert_eq!(
                ids, expected,
                "consecutive, no duplicate, the same for everyone"
            );
            let mut next_k = [0; NODES];
            let sequence: Vec<String> = received
                .iter()
                .map(|(id, text, _)| format!("{id}={text}"))
                .collect();
            for (id, text, message_epoch) in received {
                assert_eq!(message_epoch, epoch, "one epoch");
                assert_eq!(
                    by_id.entry(id).or_insert_with(|| text.clone()),
                    &text,
                    "id {id} names one message"
                );
                let (sender, k) = text.split_once(':').unwrap();
                let sender: usize = sender.parse().unwrap();
                assert_eq!(
                    k.parse::<usize>().unwrap(),
                    next_k[sender],
                    "node{}'s messages in the order sent (received as id=node:k: {sequence:?})",
                    sender + 1
                );
                next_k[sender] += 1;
            }
        }
    })
    .await;
}

/// A client sees messages on node 1, drops, more is said on nodes 2 and 3, and it rejoins on
/// node 2 with `since` + `epoch`: `recovered: true` and exactly the missed messages, then live
/// ones right after, including one a backend publishes on node 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_recovers_on_another_node_exactly_what_it_missed() {
    let _serial = serial().await;
    let Some(redis) = Redis::start_or_skip("cluster recovery") else {
        return;
    };
    bounded(Duration::from_secs(90), async {
        let cluster = Cluster::start(redis, NODES, &["--api-token", TOKEN]).await;
        let mut ann = ChatClient::connect(cluster.nodes[0].addr).await;
        let mut bob = ChatClient::connect(cluster.nodes[1].addr).await;
        let mut cy = ChatClient::connect(cluster.nodes[2].addr).await;
        ann.join("r", "ann").await;
        bob.join("r", "bob").await;
        cy.join("r", "cy").await;
        bob.say("r", "seen by ann").await;
        let seen = ann.next_message("r").await;
        assert_eq!(seen["text"], "seen by ann");
        let (last_seen, epoch) = (id(&seen), seen["epoch"].clone());
        assert!(epoch.is_string(), "{seen}");
        bob.next_message("r").await;
        cy.next_message("r").await;

        ann.close().await;
        for other in [&mut bob, &mut cy] {
            let left = other
                .next_presence_within("r", ANSWER)
                .await
                .expect("ann's leave");
            assert_eq!(
                left,
                json!({"type": "presence", "room": "r", "event": "leave", "nick": "ann"})
            );
        }
        // Everyone left has seen all three before ann comes back.
        for (speaker, text) in [("bob", "one"), ("cy", "two"), ("bob", "three")] {
            if speaker == "bob" {
                bob.say("r", text).await;
            } else {
                cy.say("r", text).await;
            }
            for listener in [&mut bob, &mut cy] {
                assert_eq!(listener.next_message("r").await["text"], text);
            }
        }

        let mut ann = ChatClient::connect(cluster.nodes[1].addr).await;
        let joined = ann
            .join_with(json!({
                "type": "join", "room": "r", "nick": "ann", "since": last_seen, "epoch": epoch,
            }))
            .await;
        assert_eq!(joined["recovered"], true, "{joined}");
        assert_eq!(joined["epoch"], epoch);
        assert_eq!(
            texts(&joined["history"]),
            ["one", "two", "three"],
            "{joined}"
        );
        let ids: Vec<u64> = joined["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(id)
            .collect();
        assert_eq!(ids, [last_seen + 1, last_seen + 2, last_seen + 3]);
        assert_eq!(joined["last_id"], last_seen + 3);
        assert_eq!(sorted_members(&joined), ["ann", "bob", "cy"], "{joined}");

        // Live messages continue right after the recovered ones, from any node.
        cy.say("r", "four").await;
        let live = ann.next_message("r").await;
        assert_eq!(
            (id(&live), live["text"].as_str()),
            (last_seen + 4, Some("four"))
        );
        for other in [&mut bob, &mut cy] {
            assert_eq!(other.next_message("r").await["text"], "four");
        }

        // Up to date on node 3: recovered, nothing to replay.
        let mut dee = ChatClient::connect(cluster.nodes[2].addr).await;
        let joined = dee
            .join_with(json!({
                "type": "join", "room": "r", "nick": "dee", "since": last_seen + 4,
                "epoch": epoch,
            }))
            .await;
        assert_eq!(joined["recovered"], true, "{joined}");
        assert_eq!(joined["history"], json!([]));

        // A backend's publish on node 1 (no member there now) is the room's next message
        // everywhere.
        let (code, answer) = publish(
            &cluster.nodes[0],
            json!({"protocol": "chat", "room": "r", "message": "from the backend"}),
        )
        .await;
        assert_eq!(code, 200, "{answer}");
        for (client, name) in [
            (&mut ann, "ann"),
            (&mut bob, "bob"),
            (&mut cy, "cy"),
            (&mut dee, "dee"),
        ] {
            let message = client.next_message("r").await;
            assert_eq!(
                (
                    id(&message),
                    message["nick"].as_str(),
                    message["text"].as_str()
                ),
                (last_seen + 5, Some("server"), Some("from the backend")),
                "{name}: {message}"
            );
        }
    })
    .await;
}

/// `joined.members`, presence and nick events cover all nodes; a node killed with SIGKILL has its
/// members leave on the others (presence leave events) within the presence TTL plus a check
/// period, and later joiners no longer see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_the_nodes_and_a_killed_nodes_members_leave_within_the_ttl() {
    let _serial = serial().await;
    let Some(redis) = Redis::start_or_skip("cluster presence after SIGKILL") else {
        return;
    };
    bounded(Duration::from_secs(90), async {
        let mut cluster = Cluster::start(redis, NODES, &[]).await;
        let mut ann = ChatClient::connect(cluster.nodes[0].addr).await;
        let mut bob = ChatClient::connect(cluster.nodes[1].addr).await;
        let mut cy = ChatClient::connect(cluster.nodes[2].addr).await;
        assert_eq!(sorted_members(&ann.join("hall", "ann").await), ["ann"]);
        assert_eq!(
            sorted_members(&bob.join("hall", "bob").await),
            ["ann", "bob"]
        );
        assert_eq!(
            ann.next_presence_within("hall", ANSWER).await,
            Some(json!({"type": "presence", "room": "hall", "event": "join", "nick": "bob"}))
        );
        assert_eq!(
            sorted_members(&cy.join("hall", "cy").await),
            ["ann", "bob", "cy"]
        );
        for other in [&mut ann, &mut bob] {
            assert_eq!(
                other.next_presence_within("hall", ANSWER).await,
                Some(json!({"type": "presence", "room": "hall", "event": "join", "nick": "cy"}))
            );
        }
        // A nick change on node 2 reaches the members on nodes 1 and 3.
        bob.send(json!({"type": "nick", "nick": "bobby"})).await;
        for other in [&mut ann, &mut cy] {
            assert_eq!(
                other.next_in_room_within("nick", "hall", ANSWER).await,
                Some(json!({"type": "nick", "room": "hall", "old": "bob", "new": "bobby"}))
            );
        }

        // Node 3 dies without a word.
        let killed = Instant::now();
        cluster.nodes[2].signal(libc::SIGKILL);
        assert!(
            cluster.nodes[2].wait_exit(Duration::from_secs(5)).is_some(),
            "node3 is gone"
        );
        drop(cy);
        let limit = PRESENCE_TTL + PRESENCE_TTL / 3 + Duration::from_secs(3);
        for other in [&mut ann, &mut bob] {
            let left = (killed + limit).saturating_duration_since(Instant::now());
            assert_eq!(
                other.next_presence_within("hall", left).await,
                Some(json!({"type": "presence", "room": "hall", "event": "leave", "nick": "cy"})),
                "cy leaves within {limit:?} of the kill"
            );
        }
        println!(
            "the killed node's member left after {:?} (presence TTL {PRESENCE_TTL:?})",
            killed.elapsed()
        );
        let mut dan = ChatClient::connect(cluster.nodes[0].addr).await;
        assert_eq!(
            sorted_members(&dan.join("hall", "dan").await),
            ["ann", "bobby", "dan"]
        );
    })
    .await;
}

/// Two chat members of `room`, each `(nick, node index)`: the second sees both in `joined`, the
/// first sees the second arrive.
async fn two_members(
    cluster: &Cluster,
    room: &str,
    (first, first_node): (&str, usize),
    (second, second_node): (&str, usize),
) -> (ChatClient, ChatClient) {
    let mut a = ChatClient::connect(cluster.nodes[first_node].addr).await;
    let mut b = ChatClient::connect(cluster.nodes[second_node].addr).await;
    a.join(room, first).await;
    let mut both = [first, second];
    both.sort_unstable();
    assert_eq!(sorted_members(&b.join(room, second).await), both);
    assert_eq!(
        a.next_presence_within(room, ANSWER).await,
        Some(json!({"type": "presence", "room": room, "event": "join", "nick": second}))
    );
    (a, b)
}

/// A broker frozen for longer than a presence mark lives (every mark expires meanwhile, since
/// nobody can refresh one) takes no live node for dead: when it thaws, the members of every node
/// are still there, and nobody is told that anyone left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_longer_than_the_presence_ttl_makes_nobody_leave() {
    let _serial = serial().await;
    let Some(redis) = Redis::start_or_skip("cluster presence across an outage") else {
        return;
    };
    bounded(Duration::from_secs(90), async {
        let mut cluster = Cluster::start(redis, NODES, &[]).await;
        let (mut ann, mut bob) = two_members(&cluster, "lounge", ("ann", 0), ("bob", 1)).await;

        cluster.redis.stop();
        tokio::time::sleep(PRESENCE_TTL + Duration::from_secs(1)).await;
        cluster.redis.cont();
        poll(
            Duration::from_secs(10),
            "every node is connected again",
            async || {
                cluster
                    .broker_statuses()
                    .await
                    .iter()
                    .all(|broker| broker.as_ref().is_some_and(|b| b["connected"] == true))
                    .then_some(())
            },
        )
        .await;
        // Longer than a node waits after reconnecting before it reaps others, plus a TTL.
        let watch = PRESENCE_TTL * 2 + Duration::from_secs(2);
        for (client, other) in [(&mut ann, "bob"), (&mut bob, "ann")] {
            let left = client.next_presence_within("lounge", watch / 2).await;
            assert!(left.is_none(), "{other} is still connected, yet: {left:?}");
        }
        bob.say("lounge", "still here").await;
        let message = ann.next_message("lounge").await;
        assert_eq!(message["nick"], "bob");
        let mut cy = ChatClient::connect(cluster.nodes[2].addr).await;
        assert_eq!(
            sorted_members(&cy.join("lounge", "cy").await),
            ["ann", "bob", "cy"]
        );
    })
    .await;
}

/// A node stopped with SIGTERM removes its presence at once: the others see its members leave
/// well before the presence TTL (30 s here), and it exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_with_sigterm_has_its_members_leave_at_once() {
    let _serial = serial().await;
    let Some(redis) = Redis::start_or_skip("cluster presence after SIGTERM") else {
        return;
    };
    bounded(Duration::from_secs(90), async {
        let mut cluster = Cluster::start(redis, NODES, &["--presence-ttl", "30s"]).await;
        let (mut ann, mut cy) = two_members(&cluster, "hall", ("ann", 0), ("cy", 2)).await;
        // cy's client answers the server's close like a browser would.
        let cy_reader = tokio::spawn(async move {
            while let Ok(Some(Ok(_))) = timeout(Duration::from_secs(30), cy.ws.next()).await {}
        });

        let stopped = Instant::now();
        cluster.nodes[2].signal(libc::SIGTERM);
        let limit = Duration::from_secs(5);
        assert_eq!(
            ann.next_presence_within("hall", limit).await,
            Some(json!({"type": "presence", "room": "hall", "event": "leave", "nick": "cy"})),
            "cy leaves within {limit:?} of the SIGTERM (the presence TTL is 30 s)"
        );
        println!("cy left {:?} after the SIGTERM", stopped.elapsed());
        let exit = cluster.nodes[2]
            .wait_exit(Duration::from_secs(15))
            .expect("node3 exits after SIGTERM");
        assert!(exit.success(), "{exit:?}");
        let _ = cy_reader.await;

        let mut bob = ChatClient::connect(cluster.nodes[1].addr).await;
        assert_eq!(
            sorted_members(&bob.join("hall", "bob").await),
            ["ann", "bob"]
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Broker failures

/// The next `message` of a room, letting a `history_lost` error for that room come first (a
/// node may report that a restarted, empty broker no longer holds the room's history).
async fn next_message_after_restart(client: &mut ChatClient, room: &str) -> Value {
    loop {
        let event = client.next().await;
        match event["type"].as_str() {
            Some("message") if event["room"] == room => return event,
            Some("error") => assert!(
                event["code"] == "history_lost" && event["room"] == room,
                "unexpected error {event}"
            ),
            _ => {}
        }
    }
}

/// Redis is killed (SIGKILL) while rooms are in use, then a new, empty one starts on the same
/// port. While it is down every node stays ready, broadcasts reach the members on the sender's
/// node, what cannot reach the others is counted, and a chat `say` is refused with
/// `unavailable` (and never delivered later). Within 5 s of the broker's return every node is
/// connected and subscribed again (`reconnects` grown), broadcasts cross nodes again, the chat
/// room works under a new epoch, and a client rejoining with the old epoch gets
/// `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_mid_stream_is_survived_and_reconnected_to() {
    let _serial = serial().await;
    let Some(redis) = Redis::start_or_skip("cluster broker killed") else {
        return;
    };
    bounded(Duration::from_secs(120), async {
        let mut cluster = Cluster::start(redis, NODES, &[]).await;
        let (node1, node2, node3) = (
            cluster.nodes[0].addr,
            cluster.nodes[1].addr,
            cluster.nodes[2].addr,
        );
        let mut ann = ChatClient::connect(node1).await;
        let mut bob = ChatClient::connect(node2).await;
        let mut dan = ChatClient::connect(node2).await;
        ann.join("r", "ann").await;
        bob.join("r", "bob").await;
        dan.join("r", "dan").await;
        ann.say("r", "before").await;
        let mut old_epoch = Value::Null;
        let mut dan_last = 0;
        for (client, name) in [(&mut ann, "ann"), (&mut bob, "bob"), (&mut dan, "dan")] {
            let message = client.next_message("r").await;
            assert_eq!(message["text"], "before", "{name}");
            old_epoch = message["epoch"].clone();
            dan_last = id(&message);
        }

        let mut m1a = join_mirror(node1, Some("m")).await;
        let mut m1b = join_mirror(node1, Some("m")).await;
        let mut m2 = join_mirror(node2, Some("m")).await;
        cluster.wait_channels(&[0, 1], 2).await;
        send_text(&mut m2, "crossing before").await;
        for member in [&mut m1a, &mut m1b, &mut m2] {
            assert_eq!(next_text(member).await, "crossing before");
        }

        let before: Vec<Value> = cluster
            .broker_statuses()
            .await
            .into_iter()
            .flatten()
            .collect();
        for (index, broker) in before.iter().enumerate() {
            assert_eq!(broker["connected"], true, "node{}: {broker}", index + 1);
        }

        // The broker dies.
        cluster.redis.kill();
        for index in 0..NODES {
            let node = &cluster.nodes[index];
            poll(
                Duration::from_secs(10),
                &format!("node{} reports the broker disconnected", index + 1),
                async || (broker_status(node).await["connected"] == false).then_some(()),
            )
            .await;
            assert_eq!(
                get(&node.http_url("/readyz")).await.0,
                200,
                "node{} stays ready while the broker is down",
                index + 1
            );
        }
        assert_eq!(
            metric(&cluster.nodes[0], "switchboard_broker_connected").await,
            Some(0.0),
            "/metrics shows the broker disconnected"
        );
        let down = cluster.broker_statuses().await;
        for (index, broker) in down.iter().flatten().enumerate() {
            assert!(
                broker["last_error"].is_string(),
                "node{}: the error is shown: {broker}",
                index + 1
            );
        }

        // Broadcasts still reach the members on the same node, and what could not reach the
        // other nodes is counted.
        send_text(&mut m1a, "local while down").await;
        for member in [&mut m1a, &mut m1b] {
            assert_eq!(next_text(member).await, "local while down");
        }
        let node1_before = &before[0];
        let counted = poll(
            Duration::from_secs(5),
            "node1 counts the broadcast it could not publish",
            async || {
                let broker = broker_status(&cluster.nodes[0]).await;
                let failures = counter(&broker, "publish_failures");
                let unrouted = counter(&broker, "unrouted");
                (failures > counter(node1_before, "publish_failures")
                    || unrouted > counter(node1_before, "unrouted"))
                .then_some(broker)
            },
        )
        .await;
        println!("node1 while the broker is down: {counted}");

        // A chat message cannot get an id: refused, never delivered.
        ann.say("r", "while down").await;
        loop {
            let event = ann.next().await;
            match event["type"].as_str() {
                Some("error") => {
                    assert_eq!(event["code"], "unavailable", "{event}");
                    assert!(
                        !event["message"].as_str().unwrap_or_default().is_empty(),
                        "{event}"
                    );
                    break;
                }
                Some("message") => panic!("delivered while the broker is down: {event}"),
                _ => {}
            }
        }

        // A new, empty broker on the same port.
        cluster.redis.restart_on_same_port();
        let back = Instant::now();
        poll(
            RECONNECT + Duration::from_millis(500),
            "every node reconnects and resubscribes within 5 s",
            async || {
                for (index, (node, before)) in cluster.nodes.iter().zip(&before).enumerate() {
                    let broker = broker_status(node).await;
                    let resubscribed = index == 2 || counter(&broker, "channels") >= 2;
                    if broker["connected"] != true
                        || counter(&broker, "reconnects") <= counter(before, "reconnects")
                        || !resubscribed
                    {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
        println!(
            "all nodes reconnected and resubscribed {:?} after the broker came back",
            back.elapsed()
        );

        assert_eq!(
            metric(&cluster.nodes[0], "switchboard_broker_connected").await,
            Some(1.0),
            "/metrics shows the broker connected again"
        );
        let reconnects = metric(&cluster.nodes[0], "switchboard_broker_reconnects_total").await;
        assert!(
            reconnects.is_some_and(|count| count >= 1.0),
            "/metrics counts the reconnect: {reconnects:?}"
        );

        // Broadcasts cross nodes again.
        send_text(&mut m2, "crossing after").await;
        for member in [&mut m1a, &mut m1b] {
            assert_eq!(next_text(member).await, "crossing after");
        }
        let mut text = next_text(&mut m2).await;
        if text == "local while down" {
            // Delivered late rather than lost is acceptable; nothing else is.
            text = next_text(&mut m2).await;
        }
        assert_eq!(text, "crossing after");

        // The chat room works again. Redis lost its data, so the room starts a new epoch.
        ann.say("r", "after").await;
        let mut new_epoch = Value::Null;
        for (client, name) in [(&mut ann, "ann"), (&mut bob, "bob")] {
            let message = next_message_after_restart(client, "r").await;
            assert_eq!(
                message["text"], "after",
                "{name} (\"while down\" was refused)"
            );
            new_epoch = message["epoch"].clone();
        }
        assert!(new_epoch.is_string());
        assert_ne!(new_epoch, old_epoch, "the empty broker means a new epoch");

        // A client that had the old epoch rejoins (on node 3): not recovered, and it gets what
        // the room keeps now.
        dan.close().await;
        let mut dan = ChatClient::connect(node3).await;
        let joined = dan
            .join_with(json!({
                "type": "join", "room": "r", "nick": "dan", "since": dan_last, "epoch": old_epoch,
            }))
            .await;
        assert_eq!(joined["recovered"], false, "{joined}");
        assert_eq!(joined["epoch"], new_epoch, "{joined}");
        assert_eq!(texts(&joined["history"]), ["after"], "{joined}");

        // Presence is rebuilt in the new broker: the members of every node are listed again.
        let mut eve = ChatClient::connect(node3).await;
        let mut joined = eve.join("r", "eve").await;
        let deadline = Instant::now() + PRESENCE_TTL + Duration::from_secs(3);
        while sorted_members(&joined) != ["ann", "bob", "dan", "eve"] && Instant::now() < deadline {
            eve.leave("r").await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            joined = eve.join("r", "eve").await;
        }
        assert_eq!(
            sorted_members(&joined),
            ["ann", "bob", "dan", "eve"],
            "members after the broker's restart: {joined}"
        );
    })
    .await;
}

/// Redis frozen (SIGSTOP) for several check intervals, then thawed: every node notices
/// (`connected` false at some point, or `reconnects` grown) and afterwards broadcasts cross
/// the nodes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deaf_broker_is_noticed_and_recovered_from() {
    let _serial = serial().await;
    let Some(redis) = Redis::start_or_skip("cluster deaf broker") else {
        return;
    };
    bounded(Duration::from_secs(90), async {
        let mut cluster = Cluster::start(redis, NODES, &[]).await;
        let mut members = Vec::new();
        for node in &cluster.nodes {
            members.push(join_mirror(node.addr, Some("deaf")).await);
        }
        cluster.wait_channels(&[0, 1, 2], 1).await;
        send_text(&mut members[0], "before").await;
        for member in members.iter_mut() {
            assert_eq!(next_text(member).await, "before");
        }
        let before: Vec<Value> = cluster
            .broker_statuses()
            .await
            .into_iter()
            .flatten()
            .collect();

        cluster.redis.stop();
        let frozen = Instant::now();
        let mut seen_disconnected = [false; NODES];
        while frozen.elapsed() < CHECK_INTERVAL * 4 {
            for (index, broker) in cluster.broker_statuses().await.iter().enumerate() {
                if broker.as_ref().is_some_and(|b| b["connected"] == false) {
                    seen_disconnected[index] = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        cluster.redis.cont();
        let thawed = Instant::now();

        let after = poll(
            Duration::from_secs(10),
            "every node is connected and subscribed again",
            async || {
                let statuses: Vec<Value> = cluster
                    .broker_statuses()
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
                statuses
                    .iter()
                    .all(|broker| broker["connected"] == true && counter(broker, "channels") >= 1)
                    .then_some(statuses)
            },
        )
        .await;
        println!(
            "seen disconnected while frozen: {seen_disconnected:?}; connected again {:?} after \
             the thaw",
            thawed.elapsed()
        );
        for index in 0..NODES {
            let reconnected =
                counter(&after[index], "reconnects") > counter(&before[index], "reconnects");
            assert!(
                seen_disconnected[index] || reconnected,
                "node{} noticed the frozen broker: before {}, after {}",
                index + 1,
                before[index],
                after[index]
            );
        }

        // Broadcasts cross the nodes again (from each node in turn).
        for sender in 0..NODES {
            let text = format!("after, from node{}", sender + 1);
            send_text(&mut members[sender], &text).await;
            for (index, member) in members.iter_mut().enumerate() {
                // Nothing was sent while the broker was frozen, so this is the next message.
                assert_eq!(next_text(member).await, text, "member on node{}", index + 1);
            }
        }
    })
    .await;
}

/// Freezes node `node` (SIGSTOP), has Redis close its connections meanwhile (as a network blip
/// would), lets `speaker` (on another node) say `count` messages in `room`, then thaws the node
/// and waits until it has reconnected. Returns the ids and texts said.
async fn say_while_cut_off(
    cluster: &Cluster,
    node: usize,
    speaker: &mut ChatClient,
    room: &str,
    prefix: &str,
    count: u64,
) -> Vec<(u64, String)> {
    let server = &cluster.nodes[node];
    let reconnects = counter(&broker_status(server).await, "reconnects");
    server.signal(libc::SIGSTOP);
    let closed = cluster.redis.kill_connections_of(server.pid());
    let mut said = Vec::new();
    for n in 1..=count {
        let text = format!("{prefix} {n}");
        speaker.say(room, &text).await;
        let message = speaker.next_message(room).await;
        assert_eq!(message["text"], text);
        said.push((id(&message), text));
    }
    server.signal(libc::SIGCONT);
    assert!(closed > 0, "Redis closed node{}'s connections", node + 1);
    poll(
        RECONNECT,
        &format!("node{} reconnects after being cut off", node + 1),
        async || {
            let broker = broker_status(server).await;
            (broker["connected"] == true && counter(&broker, "reconnects") > reconnects)
                .then_some(())
        },
    )
    .await;
    said
}

/// A node cut off from the broker for a moment (frozen, its connections closed meanwhile)
/// catches its members up when it reconnects: the messages said elsewhere in the meantime come,
/// in id order and with no gap, before newer ones. When the gap is longer than the history, the
/// members are told (`history_lost` with the room) before any message past the gap, and a
/// rejoin with `since` says `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_broker_catches_its_members_up() {
    const HISTORY: u64 = 10;
    let _serial = serial().await;
    let Some(redis) = Redis::start_or_skip("cluster catching up") else {
        return;
    };
    bounded(Duration::from_secs(90), async {
        let history = HISTORY.to_string();
        let cluster = Cluster::start(
            redis,
            NODES,
            &["--history", &history, "--presence-ttl", "10s"],
        )
        .await;
        let mut ann = ChatClient::connect(cluster.nodes[0].addr).await;
        let mut cy = ChatClient::connect(cluster.nodes[2].addr).await;
        ann.join("r", "ann").await;
        cy.join("r", "cy").await;
        ann.say("r", "warm-up").await;
        ann.next_message("r").await;
        let warm = cy.next_message("r").await;
        let epoch = warm["epoch"].clone();
        let mut last_seen = id(&warm);

        // A gap the history holds: filled, in order, then live messages follow.
        let said = say_while_cut_off(&cluster, 2, &mut ann, "r", "short", HISTORY / 2).await;
        for (said_id, text) in &said {
            let message = cy.next_message("r").await;
            assert_eq!(
                (id(&message), message["text"].as_str()),
                (*said_id, Some(text.as_str())),
                "node3's member gets what it missed, in order"
            );
            assert_eq!(message["epoch"], epoch);
        }
        last_seen = said.last().map_or(last_seen, |(said_id, _)| *said_id);
        ann.say("r", "after the short gap").await;
        let live = cy.next_message("r").await;
        assert_eq!(
            (id(&live), live["text"].as_str()),
            (last_seen + 1, Some("after the short gap"))
        );
        last_seen += 1;
        ann.next_message("r").await;

        // A gap longer than the history: said so, never a silent gap.
        let said = say_while_cut_off(&cluster, 2, &mut ann, "r", "long", HISTORY * 3).await;
        let mut seen = last_seen;
        loop {
            let event = cy.next().await;
            match event["type"].as_str() {
                Some("message") if event["room"] == "r" => {
                    assert_eq!(
                        id(&event),
                        seen + 1,
                        "a message past a gap before any history_lost: {event}"
                    );
                    seen += 1;
                }
                Some("error") => {
                    assert_eq!(event["code"], "history_lost", "{event}");
                    assert_eq!(event["room"], "r", "{event}");
                    break;
                }
                _ => {}
            }
        }
        cy.leave("r").await;
        let joined = cy
            .join_with(json!({
                "type": "join", "room": "r", "nick": "cy", "since": last_seen, "epoch": epoch,
            }))
            .await;
        assert_eq!(joined["recovered"], false, "{joined}");
        let kept: Vec<&str> = said[said.len() - HISTORY as usize..]
            .iter()
            .map(|(_, text)| text.as_str())
            .collect();
        assert_eq!(texts(&joined["history"]), kept, "{joined}");
        assert_eq!(joined["last_id"], said.last().unwrap().0);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Readiness

/// A node whose broker is not there: `/readyz` 503, `/healthz` 200, `/status` shows the broker
/// disconnected, and the node serves its own clients (echo, a same-node broadcast). When a
/// Redis starts on that port the node connects and becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_ready_only_once_its_broker_answers() {
    let _serial = serial().await;
    if redis_server_or_skip("cluster readiness").is_none() {
        return;
    }
    bounded(Duration::from_secs(60), async {
        let port = free_port();
        let node = start_node(&format!("redis://127.0.0.1:{port}"), "lonely", &[]);
        let log = || node.log().join("\n");
        assert!(
            node.wait_for_log("node id lonely", Duration::from_secs(5))
                .is_some(),
            "the node id is logged: {}",
            log()
        );
        let status = status(&node).await;
        assert_eq!(status["node_id"], "lonely", "{status}");
        assert_eq!(
            metric(&node, r#"switchboard_node{node_id="lonely"}"#).await,
            Some(1.0),
            "/metrics names the node"
        );
        let broker = &status["broker"];
        assert_eq!(broker["connected"], false, "{status}");
        assert!(
            broker["url"]
                .as_str()
                .unwrap_or_default()
                .contains(&port.to_string()),
            "{status}"
        );
        assert_eq!(get(&node.http_url("/healthz")).await.0, 200);
        // Still not ready after several connection attempts.
        for _ in 0..3 {
            assert_eq!(
                get(&node.http_url("/readyz")).await.0,
                503,
                "not ready without its broker; log: {}",
                log()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let broker = broker_status(&node).await;
        assert!(broker["last_error"].is_string(), "{broker}");

        // It serves its own clients meanwhile.
        let mut echo = connect_ready(node.addr, "/", Some("echo")).await;
        send_text(&mut echo, "hello").await;
        assert_eq!(next_text(&mut echo).await, "hello");
        let mut a = join_mirror(node.addr, Some("solo")).await;
        let mut b = join_mirror(node.addr, Some("solo")).await;
        send_text(&mut a, "same node").await;
        assert_eq!(next_text(&mut a).await, "same node");
        assert_eq!(next_text(&mut b).await, "same node");

        let redis = Redis::start_on_port(port).expect("redis-server on the node's broker port");
        let started = Instant::now();
        poll(
            RECONNECT + Duration::from_secs(1),
            "the node becomes ready once its broker answers",
            async || matches!(get(&node.http_url("/readyz")).await.0, 200).then_some(()),
        )
        .await;
        println!("ready {:?} after the broker started", started.elapsed());
        let broker = broker_status(&node).await;
        assert_eq!(broker["connected"], true, "{broker}");
        drop(redis);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The test broker itself

/// What the tests above rely on: the test Redis answers commands, attributes subscriptions to
/// the process holding them, answers nothing while frozen and again once thawed, and after a
/// kill comes back empty on the same port.
#[test]
fn the_test_broker_does_what_the_cluster_tests_rely_on() {
    let Some(mut redis) = Redis::start_or_skip("the test broker") else {
        return;
    };
    assert_eq!(redis.query(&["SET", "k", "v"]), Resp::Simple("OK".into()));
    assert_eq!(redis.query(&["GET", "k"]).text().as_deref(), Some("v"));

    let subscriber = TcpStream::connect(redis.addr()).unwrap();
    subscriber
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (&subscriber)
        .write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nalpha\r\n")
        .unwrap();
    let confirmation = read_reply(&mut BufReader::new(&subscriber)).unwrap();
    assert_eq!(confirmation.items().len(), 3, "{confirmation:?}");
    assert_eq!(redis.subscriptions_of(std::process::id()), (1, 1));
    assert!(redis.channels().contains(&"alpha".to_owned()));
    assert_eq!(redis.subscribers("alpha"), 1);

    redis.stop();
    assert!(
        command_within(redis.addr(), &["PING"], Duration::from_millis(300)).is_err(),
        "a frozen Redis answers nothing"
    );
    redis.cont();
    assert_eq!(redis.query(&["PING"]), Resp::Simple("PONG".into()));

    let (port, pid) = (redis.port, redis.pid());
    redis.kill();
    assert!(command_within(redis.addr(), &["PING"], Duration::from_secs(1)).is_err());
    redis.restart_on_same_port();
    assert_eq!(redis.port, port);
    assert_ne!(redis.pid(), pid);
    assert_eq!(
        redis.query(&["GET", "k"]),
        Resp::Bulk(None),
        "restarted empty"
    );
}
