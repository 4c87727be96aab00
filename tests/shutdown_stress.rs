//! Shutdown under load: 50 times, start the server on port 0, put it under mixed load
//! (handshakes in progress, broadcasts flowing on `lws-mirror-protocol`, slow consumers that never
//! read, uploads in progress, chat, static files with ranges on kept-alive connections), send
//! SIGTERM at a random moment, and require what a user and an operator see:
//!
//! - the process exits with status 0 within `--shutdown-timeout` (plus a little slack for the
//!   process to end), having drained: it never logs that the shutdown timeout ran out with
//!   sessions still open;
//! - every WebSocket client that was answered 101 sees a close frame (1001 "going away", or the
//!   answer to its own close) before the end of its connection, never a silent end or a hang;
//! - a handshake caught by the shutdown either completes as above or is refused (an HTTP error
//!   status, or the connection ended before an answer), within the same bound;
//! - an upload in progress when the signal arrives is either stored whole (200 with its size) or
//!   refused, never left hanging; a broadcast member receives each sender's messages in order;
//! - a slow consumer's connection ends.
//!
//! The moments are drawn from a seeded generator; the seed is printed, and
//! `SHUTDOWN_STRESS_SEED=N` repeats a run (`SHUTDOWN_STRESS_ROUNDS=N` changes the count;
//! `SHUTDOWN_STRESS_LOG=1` prints each round's server log).
//!
//! What it found (both fixed): a session upgraded during the drain (on a kept-alive connection,
//! or from a handshake already in progress) was never sent its 1001, so the drain waited for it
//! until the deadline; and a forced stop at the deadline queued behind actix-server's graceful
//! stop, which has its own timeout, so the process could exit up to another
//! `--shutdown-timeout` late.

mod support;

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use support::{
    raw_ws::{RawWs, StreamEnd, SAMPLE_KEY},
    ws_client::{connect_ready, Ws},
    Server, TempDir,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
    time::{sleep, timeout},
};
use tokio_tungstenite::{
    tungstenite::{protocol::Role, Message},
    MaybeTlsStream, WebSocketStream,
};

const ROUNDS: usize = 50;
/// `--shutdown-timeout` of the server under test.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for the process to end after its drain deadline (stopping the workers, exiting).
const EXIT_SLACK: Duration = Duration::from_secs(1);
/// How long a client may take to see the end of its connection after the signal.
const CLIENT_LIMIT: Duration = Duration::from_secs(6);
/// Any single step before the signal (a connect, a handshake, a reply).
const STEP: Duration = Duration::from_secs(10);
/// The latest moment of the signal after the load is running.
const LATEST_SIGNAL_MS: u64 = 700;

const MIRROR_MEMBERS: usize = 6;
const MIRROR_SENDERS: usize = 2;
const SLOW_CONSUMERS: usize = 3;
const CHATTERS: usize = 3;
const HANDSHAKERS: usize = 3;
const HTTP_CLIENTS: usize = 2;
const UPLOAD_BYTES: usize = 1 << 20;
const UPLOAD_PIECE: usize = 32 << 10;

/// splitmix64: small, seedable, good enough for choosing moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

#[test]
fn sigterm_at_random_moments_under_load_drains_and_exits_zero() {
    support::ws_client::raise_fd_limit(4096);
    let seed = env_number("SHUTDOWN_STRESS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let rounds = env_number("SHUTDOWN_STRESS_ROUNDS").map_or(ROUNDS, |n| n as usize);
    println!("shutdown stress: seed {seed} (SHUTDOWN_STRESS_SEED={seed} repeats this run)");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut totals = Tally::default();
    for round in 0..rounds {
        let round_seed = rng.next();
        let dir = TempDir::new("shutdown-stress");
        match runtime.block_on(one_round(round_seed, &dir)) {
            Ok(tally) => totals.add(&tally),
            Err(failure) => panic!(
                "round {round} of {rounds} (seed {seed}, round seed {round_seed}): {failure}"
            ),
        }
    }
    println!("{rounds} rounds in {:?}: {totals:?}", started.elapsed());
    // The load was there: the signal met sessions, handshakes and uploads.
    assert!(
        totals.closed_1001 > 0 && totals.uploads_stored > 0,
        "{totals:?}"
    );
}

/// What the clients of a round saw.
#[derive(Debug, Default, Clone)]
struct Tally {
    /// WebSocket clients that got close 1001 from the drain.
    closed_1001: usize,
    /// WebSocket clients whose own close was answered.
    closed_by_client: usize,
    /// Handshakes refused (an error status, or the connection ended before an answer).
    handshakes_refused: usize,
    handshakes_completed: usize,
    uploads_stored: usize,
    uploads_refused: usize,
    http_answered: usize,
    slow_consumers_ended: usize,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.closed_1001 += other.closed_1001;
        self.closed_by_client += other.closed_by_client;
        self.handshakes_refused += other.handshakes_refused;
        self.handshakes_completed += other.handshakes_completed;
        self.uploads_stored += other.uploads_stored;
        self.uploads_refused += other.uploads_refused;
        self.http_answered += other.http_answered;
        self.slow_consumers_ended += other.slow_consumers_ended;
    }
}

type Outcome = Result<Tally, String>;

/// Where the round is: signalled (clients start nothing new, except the handshakers and
/// kept-alive clients, which go on through the drain), and the server has exited.
#[derive(Default)]
struct Phase {
    signalled: AtomicBool,
    exited: AtomicBool,
}

impl Phase {
    fn signalled(&self) -> bool {
        self.signalled.load(Ordering::SeqCst)
    }
}

async fn one_round(seed: u64, dir: &TempDir) -> Result<Tally, String> {
    let mut rng = Rng(seed);
    let mut server = Server::start(&[
        "--workers",
        "2",
        "--shutdown-timeout",
        "3",
        "--close-timeout",
        "1",
        "--max-backlog",
        "256KiB",
        "--upload-dir",
        dir.arg(),
    ]);
    let addr = server.addr;
    let phase = Arc::new(Phase::default());
    let phase_for = || Arc::clone(&phase);
    let mut clients: JoinSet<Outcome> = JoinSet::new();

    // Broadcast members, two of them sending; all ready before the load counts as running.
    let mut members = Vec::new();
    for _ in 0..MIRROR_MEMBERS {
        members.push(connect_ready(addr, "/?mirror=stress", Some("lws-mirror-protocol")).await);
    }
    let mut slow = Vec::new();
    for _ in 0..SLOW_CONSUMERS {
        slow.push(
            RawWs::connect_with(
                addr,
                "/?mirror=stress",
                &[("Sec-WebSocket-Protocol", "lws-mirror-protocol")],
            )
            .await,
        );
    }
    for (index, ws) in members.into_iter().enumerate() {
        let sender = (index < MIRROR_SENDERS).then_some(index);
        clients.spawn(mirror_member(ws, sender, phase_for()));
    }
    for index in 0..CHATTERS {
        let ws = connect_ready(addr, "/", Some("chat")).await;
        clients.spawn(chatter(ws, index, phase_for()));
    }
    for index in 0..HANDSHAKERS {
        clients.spawn(handshaker(addr, seed ^ index as u64, phase_for()));
    }
    for index in 0..HTTP_CLIENTS {
        clients.spawn(kept_alive_client(
            addr,
            seed ^ ((index as u64) << 8),
            phase_for(),
        ));
    }
    let uploads_started = Arc::new(AtomicUsize::new(0));
    clients.spawn(uploader(addr, phase_for(), uploads_started.clone()));

    // The random moment (pacing of the signal, not a wait for an event).
    sleep(Duration::from_millis(rng.below(LATEST_SIGNAL_MS))).await;
    phase.signalled.store(true, Ordering::SeqCst);
    server.signal(libc::SIGTERM);
    let signalled = Instant::now();

    let log_tail = |server: &Server| {
        let log = server.log();
        let from = log.len().saturating_sub(15);
        log[from..].join("\n")
    };
    let status = server.wait_exit_async(SHUTDOWN_TIMEOUT + EXIT_SLACK).await;
    phase.exited.store(true, Ordering::SeqCst);
    let Some(status) = status else {
        return Err(format!(
            "still running {:?} after SIGTERM (--shutdown-timeout 3); log:\n{}",
            signalled.elapsed(),
            log_tail(&server)
        ));
    };
    if !status.success() {
        return Err(format!(
            "exit status {status:?} after SIGTERM; log:\n{}",
            log_tail(&server)
        ));
    }
    if std::env::var_os("SHUTDOWN_STRESS_LOG").is_some() {
        println!("{}", server.log().join("\n"));
    }
    if let Some(line) = server
        .log()
        .into_iter()
        .find(|line| line.contains("shutdown timeout"))
    {
        return Err(format!(
            "the drain did not finish before the deadline: {line}; log:\n{}",
            log_tail(&server)
        ));
    }

    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let collect = async {
        while let Some(joined) = clients.join_next().await {
            match joined {
                Ok(Ok(client)) => tally.add(&client),
                Ok(Err(failure)) => failures.push(failure),
                Err(panic) => failures.push(format!("a client panicked: {panic}")),
            }
        }
    };
    if timeout(CLIENT_LIMIT, collect).await.is_err() {
        failures.push(format!(
            "{} clients still waiting for their connection to end {CLIENT_LIMIT:?} after the signal",
            clients.len()
        ));
        clients.abort_all();
    }
    for mut consumer in slow {
        match consumer.reader.drain_to_end(CLIENT_LIMIT).await {
            Some((_, StreamEnd::Eof | StreamEnd::Error(_))) => tally.slow_consumers_ended += 1,
            None => failures.push("a slow consumer's connection did not end".to_owned()),
        }
    }
    if failures.is_empty() {
        Ok(tally)
    } else {
        let mut report = String::new();
        for failure in &failures {
            let _ = writeln!(report, "- {failure}");
        }
        Err(format!("{report}log:\n{}", log_tail(&server)))
    }
}

/// Reads `ws` to its end; the close code it got (`Err` if it ended without a close frame or did
/// not end). Text messages go to `on_text`.
async fn read_to_close(
    ws: &mut Ws,
    mut on_text: impl FnMut(&str) -> Result<(), String>,
) -> Result<u16, String> {
    let deadline = tokio::time::Instant::now() + CLIENT_LIMIT + STEP;
    let mut close = None;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err("the connection did not end".to_owned()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                close = Some(frame.map_or(1005, |frame| u16::from(frame.code)));
            }
            Ok(Some(Ok(Message::Text(text)))) => on_text(&text)?,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => {
                return close.ok_or_else(|| "the connection ended without a close frame".to_owned())
            }
        }
    }
}

fn closed_by_drain(code: u16, what: &str) -> Outcome {
    match code {
        1001 => Ok(Tally {
            closed_1001: 1,
            ..Tally::default()
        }),
        other => Err(format!("{what}: close {other}, expected 1001")),
    }
}

/// A member of the `stress` mirror instance; a sender sends `s{index} {seq}` every 2 ms until
/// the signal. Checks each sender's messages arrive in order and the drain's close.
async fn mirror_member(mut ws: Ws, sender: Option<usize>, phase: Arc<Phase>) -> Outcome {
    let mut last_seen = [None::<u64>; MIRROR_SENDERS];
    let mut check = |text: &str| -> Result<(), String> {
        let (who, seq) = text
            .strip_prefix('s')
            .and_then(|rest| rest.split_once(' '))
            .and_then(|(who, seq)| Some((who.parse::<usize>().ok()?, seq.parse::<u64>().ok()?)))
            .ok_or_else(|| format!("unexpected broadcast {text:?}"))?;
        let previous = last_seen[who].replace(seq);
        match previous {
            Some(previous) if seq != previous + 1 => {
                Err(format!("sender {who}: message {seq} after {previous}"))
            }
            _ => Ok(()),
        }
    };
    if let Some(index) = sender {
        let mut seq = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        let mut close = None;
        while !phase.signalled() {
            tokio::select! {
                _ = tick.tick() => {
                    if ws.send(Message::text(format!("s{index} {seq}"))).await.is_err() {
                        break;
                    }
                    seq += 1;
                }
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => check(&text)?,
                    Some(Ok(Message::Close(frame))) => {
                        close = Some(frame.map_or(1005, |frame| u16::from(frame.code)));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Err(format!("mirror sender before the signal: {err}")),
                    None => return Err("mirror sender: ended before the signal".to_owned()),
                },
            }
        }
        if let Some(code) = close {
            // The close came while sending; the connection must still end.
            let _ = read_to_close(&mut ws, |_| Ok(())).await;
            return closed_by_drain(code, "mirror sender");
        }
    }
    let code = read_to_close(&mut ws, check).await?;
    closed_by_drain(code, "mirror member")
}

/// A chat member of room `stress` that says something every 60 ms until the signal.
async fn chatter(mut ws: Ws, index: usize, phase: Arc<Phase>) -> Outcome {
    let join = format!(r#"{{"type":"join","room":"stress","nick":"c{index}"}}"#);
    ws.send(Message::text(join))
        .await
        .map_err(|err| format!("chat join: {err}"))?;
    let mut tick = tokio::time::interval(Duration::from_millis(60));
    let mut n = 0;
    let check = |text: &str| -> Result<(), String> {
        let event: serde_json::Value =
            serde_json::from_str(text).map_err(|err| format!("chat: {err}: {text}"))?;
        match event["type"].as_str() {
            Some("joined" | "message" | "presence") => Ok(()),
            _ => Err(format!("chat: unexpected event {text}")),
        }
    };
    while !phase.signalled() {
        tokio::select! {
            _ = tick.tick() => {
                let say = format!(r#"{{"type":"say","room":"stress","text":"{n}"}}"#);
                n += 1;
                if ws.send(Message::text(say)).await.is_err() {
                    break;
                }
            }
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => check(&text)?,
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |frame| u16::from(frame.code));
                    let _ = read_to_close(&mut ws, |_| Ok(())).await;
                    return closed_by_drain(code, "chat");
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(format!("chat before the signal: {err}")),
                None => return Err("chat: ended before the signal".to_owned()),
            },
        }
    }
    let code = read_to_close(&mut ws, check).await?;
    closed_by_drain(code, "chat")
}

/// An HTTP response head read off a raw connection, and the bytes read past it.
struct Head {
    status: u16,
    content_length: Option<usize>,
    rest: Vec<u8>,
}

/// Reads a response head; `None` if the connection ended (or failed) first.
async fn read_head(stream: &mut TcpStream, limit: Duration) -> Result<Option<Head>, String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| format!("bad status line in {head:?}"))?;
            let content_length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            });
            return Ok(Some(Head {
                status,
                content_length,
                rest: buf[end + 4..].to_vec(),
            }));
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(format!("no response head within {limit:?}")),
            Ok(Ok(0) | Err(_)) => return Ok(None),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads the body of `head` (by its length); `None` if the connection ended first.
async fn read_body(
    stream: &mut TcpStream,
    head: Head,
    limit: Duration,
) -> Result<Option<Vec<u8>>, String> {
    let length = head
        .content_length
        .ok_or_else(|| format!("status {} without Content-Length", head.status))?;
    let deadline = tokio::time::Instant::now() + limit;
    let mut body = head.rest;
    while body.len() < length {
        let mut chunk = vec![0u8; 16 << 10];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Err(format!("no whole body within {limit:?}")),
            Ok(Ok(0) | Err(_)) => return Ok(None),
            Ok(Ok(n)) => body.extend_from_slice(&chunk[..n]),
        }
    }
    if body.len() > length {
        return Err(format!(
            "{} bytes after a body of {length} (nothing was pipelined)",
            body.len() - length
        ));
    }
    Ok(Some(body))
}

/// Sends an upgrade for the echo protocol in two writes `pause` apart (a handshake in
/// progress), then reads the answer. `Ok(None)`: refused (an error status, or the connection
/// ended before an answer).
async fn upgrade(mut stream: TcpStream, pause: Duration) -> Result<Option<Ws>, String> {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: stress\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: echo\r\n\r\n"
    );
    let (first, second) = request.split_at(request.len() / 2);
    if stream.write_all(first.as_bytes()).await.is_err() {
        return Ok(None);
    }
    sleep(pause).await;
    if stream.write_all(second.as_bytes()).await.is_err() {
        return Ok(None);
    }
    let Some(head) = read_head(&mut stream, CLIENT_LIMIT + STEP).await? else {
        return Ok(None);
    };
    match head.status {
        101 => Ok(Some(
            WebSocketStream::from_partially_read(
                MaybeTlsStream::Plain(stream),
                head.rest,
                Role::Client,
                None,
            )
            .await,
        )),
        400..=599 => Ok(None),
        other => Err(format!("upgrade answered {other}")),
    }
}

/// An upgraded echo connection: one echo, then, before the signal, close it ourselves; after
/// the signal, wait for the drain to close it (1001). Either way a close frame must come before
/// the end.
async fn echo_once(mut ws: Ws, stop: &AtomicBool) -> Outcome {
    let _ = ws.send(Message::text("ping?")).await;
    let deadline = tokio::time::Instant::now() + CLIENT_LIMIT + STEP;
    let mut closed_by_us = false;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err("echo: the connection did not end".to_owned()),
            Ok(Some(Ok(Message::Text(text)))) => {
                if text.as_str() != "ping?" {
                    return Err(format!("echo: got {text:?}"));
                }
                if !stop.load(Ordering::SeqCst) {
                    closed_by_us = true;
                    let _ = ws.close(None).await;
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                let code = frame.map_or(1005, |frame| u16::from(frame.code));
                let _ = read_to_close(&mut ws, |_| Ok(())).await;
                return match code {
                    1001 => Ok(Tally {
                        closed_1001: 1,
                        handshakes_completed: 1,
                        ..Tally::default()
                    }),
                    1000 | 1005 if closed_by_us => Ok(Tally {
                        closed_by_client: 1,
                        handshakes_completed: 1,
                        ..Tally::default()
                    }),
                    other => Err(format!("echo: close {other}")),
                };
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => {
                return Err("echo: the connection ended without a close frame".to_owned())
            }
        }
    }
}

/// Opens connections and upgrades them (each request head sent in two pieces up to 20 ms
/// apart), one after the other, before and during the drain, until the server has exited.
async fn handshaker(addr: SocketAddr, seed: u64, phase: Arc<Phase>) -> Outcome {
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    while !phase.exited.load(Ordering::SeqCst) {
        let stream = match timeout(STEP, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) if phase.signalled() => {
                tally.handshakes_refused += 1;
                break;
            }
            Ok(Err(err)) => return Err(format!("connect before the signal: {err}")),
            Err(_) => return Err("connect: no answer".to_owned()),
        };
        let pause = Duration::from_millis(rng.below(20));
        match upgrade(stream, pause).await? {
            Some(ws) => tally.add(&echo_once(ws, &phase.signalled).await?),
            None if phase.signalled() => tally.handshakes_refused += 1,
            None => return Err("an upgrade was refused before the signal".to_owned()),
        }
    }
    Ok(tally)
}

/// Static files on one kept-alive connection (a range of `test.html`, then the whole index),
/// and now and then an upgrade on the same connection (often during the drain), until the
/// connection ends or the server has exited.
async fn kept_alive_client(addr: SocketAddr, seed: u64, phase: Arc<Phase>) -> Outcome {
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    let index = std::fs::read(support::project_static_dir().join("index.html")).unwrap();
    let test_page = std::fs::read(support::project_static_dir().join("test.html")).unwrap();
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|err| format!("connect: {err}"))?;
    while !phase.exited.load(Ordering::SeqCst) {
        let from = rng.below(test_page.len() as u64 / 2) as usize;
        let requests = [
            (
                format!(
                    "GET /test.html HTTP/1.1\r\nHost: stress\r\nRange: bytes={from}-{}\r\n\r\n",
                    from + 99
                ),
                206,
                &test_page[from..from + 100],
            ),
            (
                "GET /index.html HTTP/1.1\r\nHost: stress\r\n\r\n".to_owned(),
                200,
                &index[..],
            ),
        ];
        for (request, expected_status, expected_body) in requests {
            if stream.write_all(request.as_bytes()).await.is_err() {
                return ended_while_draining(&phase, tally, "kept-alive GET");
            }
            let Some(head) = read_head(&mut stream, CLIENT_LIMIT + STEP).await? else {
                return ended_while_draining(&phase, tally, "kept-alive GET");
            };
            if head.status != expected_status {
                return Err(format!(
                    "kept-alive GET: status {}, expected {expected_status}",
                    head.status
                ));
            }
            let Some(body) = read_body(&mut stream, head, CLIENT_LIMIT + STEP).await? else {
                return ended_while_draining(&phase, tally, "kept-alive GET");
            };
            if body != expected_body {
                return Err(format!("kept-alive GET: wrong body ({} bytes)", body.len()));
            }
            tally.http_answered += 1;
        }
        let odds = if phase.signalled() { 2 } else { 4 };
        if rng.below(odds) == 0 {
            // An upgrade on the kept-alive connection; then a new connection.
            let pause = Duration::from_millis(rng.below(10));
            match upgrade(stream, pause).await? {
                Some(ws) => tally.add(&echo_once(ws, &phase.signalled).await?),
                None if phase.signalled() => tally.handshakes_refused += 1,
                None => return Err("a kept-alive upgrade was refused before the signal".into()),
            }
            stream = match TcpStream::connect(addr).await {
                Ok(stream) => stream,
                Err(_) if phase.signalled() => break,
                Err(err) => return Err(format!("connect before the signal: {err}")),
            };
        }
    }
    Ok(tally)
}

fn ended_while_draining(phase: &Phase, tally: Tally, what: &str) -> Outcome {
    if phase.signalled() {
        Ok(tally)
    } else {
        Err(format!("{what}: the connection ended before the signal"))
    }
}

/// Uploads of 1 MiB, each in 32 KiB pieces 1 ms apart on a new connection, one after the other
/// until the signal; the one in progress then finishes. A stored upload must report its size.
async fn uploader(addr: SocketAddr, phase: Arc<Phase>, started: Arc<AtomicUsize>) -> Outcome {
    const BOUNDARY: &str = "stress-boundary-4f1c";
    let mut tally = Tally::default();
    let piece = vec![b'u'; UPLOAD_PIECE];
    loop {
        let signalled = phase.signalled();
        let n = started.fetch_add(1, Ordering::SeqCst);
        let head = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"u{n}.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{BOUNDARY}--\r\n");
        let length = head.len() + UPLOAD_BYTES + tail.len();
        let request = format!(
            "POST /upload HTTP/1.1\r\nHost: stress\r\nContent-Type: multipart/form-data; \
             boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n{head}"
        );
        let mut stream = match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(_) if signalled => return Ok(tally),
            Err(err) => return Err(format!("upload connect before the signal: {err}")),
        };
        let mut sent_all = stream.write_all(request.as_bytes()).await.is_ok();
        let mut sent = 0;
        while sent_all && sent < UPLOAD_BYTES {
            sent_all = stream.write_all(&piece).await.is_ok();
            sent += UPLOAD_PIECE;
            sleep(Duration::from_millis(1)).await;
        }
        sent_all = sent_all && stream.write_all(tail.as_bytes()).await.is_ok();
        let reply = match read_head(&mut stream, CLIENT_LIMIT + STEP).await? {
            Some(head) => read_body(&mut stream, head, CLIENT_LIMIT + STEP)
                .await
                .map(|body| body.map(|body| String::from_utf8_lossy(&body).into_owned())),
            None => Ok(None),
        };
        match reply? {
            Some(body) if body.contains(&format!("\"bytes\":{UPLOAD_BYTES}")) && sent_all => {
                tally.uploads_stored += 1;
            }
            Some(body) => return Err(format!("upload answered {body:?}")),
            None if phase.signalled() => tally.uploads_refused += 1,
            None => return Err("an upload was cut before the signal".to_owned()),
        }
        if signalled || phase.signalled() {
            return Ok(tally);
        }
    }
}
