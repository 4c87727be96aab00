//! `soak`: mixed load for a long run (`bench/soak.sh`): chat rooms, a mirror broadcast with
//! subscribers that check order, slow consumers that never read, static files with byte ranges
//! on kept-alive connections, uploads, and WebSocket connections opening and closing. Every
//! `--report-every` seconds it prints one JSON progress line (cumulative operations and errors
//! by kind); it exits 1 if any request that should not fail failed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{interval, sleep, timeout, MissedTickBehavior};
use tokio_tungstenite::client_async_with_config;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{self, Target, Ws};
use crate::Common;

/// How long one request (an HTTP exchange, an echo, a chat answer) may take before it counts as
/// failed.
const ANSWER: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// Seconds between progress lines
    #[arg(long, default_value_t = 10.0)]
    pub report_every: f64,
    /// Chat rooms
    #[arg(long, default_value_t = 4)]
    pub chat_rooms: usize,
    /// Members per chat room; each says something every --chat-interval-ms
    #[arg(long, default_value_t = 5)]
    pub chat_members: usize,
    #[arg(long, default_value_t = 1000)]
    pub chat_interval_ms: u64,
    /// Subscribers of the mirror instance `soak`
    #[arg(long, default_value_t = 50)]
    pub mirror_subscribers: usize,
    /// Broadcasts per second on the mirror instance (one publisher)
    #[arg(long, default_value_t = 100.0)]
    pub mirror_rate: f64,
    /// Bytes per broadcast
    #[arg(long, default_value_t = 512)]
    pub mirror_size: usize,
    /// Members of the mirror instance that never read (replaced every --slow-cycle seconds)
    #[arg(long, default_value_t = 3)]
    pub slow_consumers: usize,
    #[arg(long, default_value_t = 120.0)]
    pub slow_cycle: f64,
    /// Kept-alive HTTP clients fetching byte ranges of --static-path
    #[arg(long, default_value_t = 2)]
    pub http_clients: usize,
    /// Requests per second per HTTP client
    #[arg(long, default_value_t = 100.0)]
    pub http_rate: f64,
    #[arg(long, default_value = "/test.html")]
    pub static_path: String,
    /// Milliseconds between uploads (POST /upload; the server needs --upload-dir)
    #[arg(long, default_value_t = 1000)]
    pub upload_interval_ms: u64,
    #[arg(long, default_value_t = 256 * 1024)]
    pub upload_size: usize,
    /// Echo connections opened (one echo, then a close) per second
    #[arg(long, default_value_t = 20.0)]
    pub churn_rate: f64,
}

impl SoakArgs {
    pub fn time_bound(&self, common: &Common) -> Duration {
        common.duration() + Duration::from_secs(60) + common.connect_timeout()
    }
}

/// Operations and errors by kind, shared by every task.
#[derive(Default)]
struct Tally {
    ops: Mutex<BTreeMap<&'static str, u64>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    error_total: AtomicU64,
}

impl Tally {
    fn op(&self, kind: &'static str, n: u64) {
        *self.ops.lock().unwrap().entry(kind).or_default() += n;
    }

    /// Counts an error; the first 20 are also printed (standard error) with what happened.
    fn error(&self, kind: &'static str, what: impl std::fmt::Display) {
        *self.errors.lock().unwrap().entry(kind).or_default() += 1;
        if self.error_total.fetch_add(1, Ordering::Relaxed) < 20 {
            eprintln!("soak: {kind}: {what}");
        }
    }

    fn snapshot(&self, seconds: f64) -> Value {
        json!({
            "progress": true,
            "t": common::round3(seconds),
            "ops": *self.ops.lock().unwrap(),
            "errors": *self.errors.lock().unwrap(),
            "error_total": self.error_total.load(Ordering::Relaxed),
        })
    }
}

struct Ctx {
    target: Target,
    args: SoakArgs,
    connect_timeout: Duration,
    tally: Tally,
    stop: AtomicBool,
}

impl Ctx {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    async fn ws(&self, query: Option<&str>, protocol: &str) -> Result<Ws> {
        let target = match query {
            Some(query) => {
                let (name, value) = query.split_once('=').unwrap_or((query, ""));
                self.target.with_query(name, value)
            }
            None => self.target.clone(),
        };
        common::connect(
            &target,
            Some(protocol),
            None,
            common::ws_config(64 << 10),
            self.connect_timeout,
        )
        .await
    }
}

pub async fn run(common: &Common, args: &SoakArgs) -> Result<()> {
    let target = Target::parse(&common.url)?;
    if target.tls {
        bail!("the soak speaks plain HTTP too, so it takes a ws:// URL only");
    }
    if args.mirror_rate <= 0.0 || args.http_rate <= 0.0 || args.churn_rate <= 0.0 {
        bail!("rates must be positive");
    }
    let ctx = Arc::new(Ctx {
        target,
        args: args.clone(),
        connect_timeout: common.connect_timeout(),
        tally: Tally::default(),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let mut tasks = JoinSet::new();

    // Long-lived members first: subscribers, chat members, slow consumers.
    for index in 0..args.mirror_subscribers {
        let ws = ctx
            .ws(Some("mirror=soak"), "lws-mirror-protocol")
            .await
            .with_context(|| format!("mirror subscriber {index}"))?;
        tasks.spawn(subscriber(ctx.clone(), ws));
    }
    for room in 0..args.chat_rooms {
        for member in 0..args.chat_members {
            let ws = ctx.ws(None, "chat").await.context("chat member")?;
            tasks.spawn(chat_member(ctx.clone(), ws, room, member));
        }
    }
    for _ in 0..args.slow_consumers {
        tasks.spawn(slow_consumer(ctx.clone()));
    }
    // Let the members' sessions join before the first broadcast.
    let publisher = ctx
        .ws(Some("mirror=soak"), "lws-mirror-protocol")
        .await
        .context("mirror publisher")?;
    tasks.spawn(publish(ctx.clone(), publisher));
    for _ in 0..args.http_clients {
        tasks.spawn(static_client(ctx.clone()));
    }
    tasks.spawn(uploader(ctx.clone()));
    tasks.spawn(churn(ctx.clone()));
    eprintln!(
        "soak: load running against {} for {:?}",
        ctx.target.url,
        common.duration()
    );

    let report_every = Duration::from_secs_f64(args.report_every.max(0.1));
    let end = started + common.duration();
    let mut next_report = started + report_every;
    while Instant::now() < end {
        let wake = next_report.min(end);
        sleep(wake.saturating_duration_since(Instant::now())).await;
        if Instant::now() >= next_report {
            println!("{}", ctx.tally.snapshot(started.elapsed().as_secs_f64()));
            next_report += report_every;
        }
    }
    ctx.stop.store(true, Ordering::Relaxed);
    // Tasks finish what they are doing (bounded by their own timeouts).
    let _ = timeout(ANSWER + Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();

    let summary = ctx.tally.snapshot(started.elapsed().as_secs_f64());
    let errors = ctx.tally.error_total.load(Ordering::Relaxed);
    eprintln!("soak: operations {}", summary["ops"]);
    eprintln!("soak: errors {}", summary["errors"]);
    let mut last = summary;
    last["progress"] = Value::from(false);
    println!("{last}");
    if errors > 0 {
        bail!("{errors} requests failed that should not have");
    }
    Ok(())
}

/// Reads the `soak` mirror instance: each broadcast `seq N ...` must be the next one.
async fn subscriber(ctx: Arc<Ctx>, mut ws: Ws) {
    let mut expected: Option<u64> = None;
    let mut received = 0u64;
    while ctx.running() {
        let next = match timeout(Duration::from_millis(500), ws.next()).await {
            Err(_) => continue,
            Ok(next) => next,
        };
        match next {
            Some(Ok(Message::Text(text))) => {
                let seq = text
                    .strip_prefix("seq ")
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|n| n.parse::<u64>().ok());
                match (seq, expected) {
                    (Some(seq), Some(want)) if seq != want => {
                        ctx.tally
                            .error("mirror_order", format!("got {seq}, expected {want}"));
                        expected = Some(seq + 1);
                    }
                    (Some(seq), _) => expected = Some(seq + 1),
                    (None, _) => ctx.tally.error("mirror_order", format!("stray {text:?}")),
                }
                received += 1;
                if received.is_multiple_of(1000) {
                    ctx.tally.op("mirror_deliveries", 1000);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return ctx.tally.error("mirror_closed", err),
            None => {
                return ctx
                    .tally
                    .error("mirror_closed", "the subscriber's connection ended")
            }
        }
    }
    ctx.tally.op("mirror_deliveries", received % 1000);
}

/// Broadcasts `seq N` plus padding to the `soak` instance at --mirror-rate.
async fn publish(ctx: Arc<Ctx>, ws: Ws) {
    let (mut sink, mut stream) = ws.split();
    // Its own copies come back; read them so its socket never fills.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let padding = "x".repeat(ctx.args.mirror_size.saturating_sub(24));
    let mut tick = interval(Duration::from_secs_f64(1.0 / ctx.args.mirror_rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seq = 0u64;
    while ctx.running() {
        tick.tick().await;
        let text = format!("seq {seq} {padding}");
        if let Err(err) = sink.send(Message::text(text)).await {
            ctx.tally.error("mirror_publish", err);
            break;
        }
        seq += 1;
        ctx.tally.op("broadcasts", 1);
    }
    let _ = sink.close().await;
    reader.abort();
}

/// A member of the `soak` instance that never reads; the server closes it (slow consumer)
/// once its backlog is full. Every --slow-cycle seconds it is replaced by a new one; the old one
/// is read to its end to see whether the server had closed it.
async fn slow_consumer(ctx: Arc<Ctx>) {
    let cycle = Duration::from_secs_f64(ctx.args.slow_cycle.max(1.0));
    while ctx.running() {
        let ws = match slow_connect(&ctx).await {
            Ok(ws) => ws,
            Err(err) => {
                ctx.tally.error("slow_connect", format!("{err:#}"));
                sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        ctx.tally.op("slow_consumers", 1);
        let until = Instant::now() + cycle;
        while ctx.running() && Instant::now() < until {
            sleep(Duration::from_millis(200)).await;
        }
        // Read what is there: the server's close means it applied the slow-consumer policy.
        let mut ws = ws;
        let closed = timeout(ANSWER, async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return true,
                    Some(Ok(_)) => {}
                }
            }
        });
        let closed_by_server = tokio::select! {
            closed = closed => closed.unwrap_or(false),
            // Still open after a second of reading: it kept up once it read; close it.
            _ = sleep(Duration::from_secs(1)) => false,
        };
        if closed_by_server {
            ctx.tally.op("slow_consumers_closed_by_server", 1);
        } else {
            let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
        }
    }
}

/// A member of the `soak` instance with a 4 KiB receive buffer, so that what it does not read
/// piles up in the server's backlog within seconds rather than in the kernel's buffers.
async fn slow_connect(ctx: &Ctx) -> Result<Ws> {
    let attempt = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let stream = socket
            .connect(ctx.target.addr)
            .await
            .context("TCP connect")?;
        let target = ctx.target.with_query("mirror", "soak");
        let mut request = target.url.as_str().into_client_request()?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("lws-mirror-protocol"),
        );
        // The soak runs over plain ws only (its HTTP clients speak plain HTTP).
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
        let (ws, _) = client_async_with_config(request, stream, Some(common::ws_config(4096)))
            .await
            .context("WebSocket handshake")?;
        anyhow::Ok(ws)
    };
    timeout(ctx.connect_timeout, attempt)
        .await
        .context("connect timed out")?
}

/// One chat member of room `soak-ROOM`: says something every --chat-interval-ms, and checks that
/// the room's messages arrive with ids one apart and that nothing is refused.
async fn chat_member(ctx: Arc<Ctx>, mut ws: Ws, room: usize, member: usize) {
    let room_name = format!("soak-{room}");
    let join = json!({"type": "join", "room": room_name, "nick": format!("m{room}-{member}")});
    if let Err(err) = ws.send(Message::text(join.to_string())).await {
        return ctx.tally.error("chat", err);
    }
    let mut tick = interval(Duration::from_millis(ctx.args.chat_interval_ms.max(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_id: Option<u64> = None;
    let mut n = 0u64;
    while ctx.running() {
        tokio::select! {
            _ = tick.tick() => {
                if last_id.is_none() {
                    continue; // not joined yet
                }
                let say = json!({"type": "say", "room": room_name, "text": n.to_string()});
                n += 1;
                if let Err(err) = ws.send(Message::text(say.to_string())).await {
                    return ctx.tally.error("chat", err);
                }
                ctx.tally.op("chat_says", 1);
            }
            next = ws.next() => match next {
                Some(Ok(Message::Text(text))) => {
                    let event: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    match event["type"].as_str() {
                        Some("joined") => last_id = event["last_id"].as_u64(),
                        Some("message") => {
                            let id = event["id"].as_u64();
                            match (id, last_id) {
                                (Some(id), Some(last)) if id != last + 1 => ctx.tally.error(
                                    "chat_order",
                                    format!("{room_name}: id {id} after {last}"),
                                ),
                                _ => {}
                            }
                            last_id = id.or(last_id);
                            ctx.tally.op("chat_deliveries", 1);
                        }
                        Some("presence" | "nick") => {}
                        _ => ctx.tally.error("chat", format!("unexpected {text}")),
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return ctx.tally.error("chat", err),
                None => return ctx.tally.error("chat", "the connection ended"),
            },
        }
    }
    let _ = timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// A response read off a raw HTTP/1.1 connection.
struct Reply {
    status: u16,
    body: Vec<u8>,
}

/// Sends `request` and reads one response with a `Content-Length` body.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Result<Reply> {
    timeout(ANSWER, async {
        stream.write_all(request).await.context("send")?;
        let mut buf = Vec::with_capacity(16 << 10);
        let head_end = loop {
            if let Some(pos) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                break pos + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await.context("read")?;
            if n == 0 {
                bail!("the connection ended before the response head");
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("bad status line: {head:?}"))?;
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .with_context(|| format!("no Content-Length: {head:?}"))?;
        let mut body = buf.split_off(head_end);
        while body.len() < length {
            let mut chunk = vec![0u8; 64 << 10];
            let n = stream.read(&mut chunk).await.context("read body")?;
            if n == 0 {
                bail!("the connection ended inside the body");
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Ok(Reply { status, body })
    })
    .await
    .context("no whole answer in time")?
}

/// Kept-alive GETs of --static-path: mostly one byte range (206, the right bytes), every tenth
/// the whole file (200); a new connection every 50 requests.
async fn static_client(ctx: Arc<Ctx>) {
    let path = ctx.args.static_path.clone();
    let host = ctx.target.addr;
    let whole_request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let mut tick = interval(Duration::from_secs_f64(1.0 / ctx.args.http_rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut content: Option<Vec<u8>> = None;
    let mut stream: Option<TcpStream> = None;
    let mut count = 0u64;
    while ctx.running() {
        tick.tick().await;
        if stream.is_none() || count.is_multiple_of(50) {
            stream = match timeout(ctx.connect_timeout, TcpStream::connect(ctx.target.addr)).await {
                Ok(Ok(stream)) => Some(stream),
                other => {
                    ctx.tally.error("http", format!("connect: {other:?}"));
                    continue;
                }
            };
        }
        count += 1;
        let connection = stream.as_mut().expect("connected above");
        let outcome = match &content {
            Some(whole) if !count.is_multiple_of(10) => {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let from = (rng % whole.len() as u64) as usize;
                let to = (from + (rng >> 32) as usize % 4096).min(whole.len() - 1);
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nRange: bytes={from}-{to}\r\n\r\n"
                );
                exchange(connection, request.as_bytes())
                    .await
                    .and_then(|reply| {
                        if reply.status != 206 || reply.body != whole[from..=to] {
                            bail!(
                                "range {from}-{to}: status {}, {} bytes",
                                reply.status,
                                reply.body.len()
                            );
                        }
                        Ok(())
                    })
            }
            _ => exchange(connection, whole_request.as_bytes())
                .await
                .and_then(|reply| {
                    if reply.status != 200 || content.as_ref().is_some_and(|c| *c != reply.body) {
                        bail!(
                            "whole file: status {}, {} bytes",
                            reply.status,
                            reply.body.len()
                        );
                    }
                    content.get_or_insert(reply.body);
                    Ok(())
                }),
        };
        match outcome {
            Ok(()) => ctx.tally.op("http_requests", 1),
            Err(err) => {
                ctx.tally.error("http", format!("{err:#}"));
                stream = None;
            }
        }
    }
}

/// POST /upload of --upload-size bytes every --upload-interval-ms, each on a new connection;
/// the answer must report the size.
async fn uploader(ctx: Arc<Ctx>) {
    const BOUNDARY: &str = "soak-7c2e91";
    let size = ctx.args.upload_size;
    let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut tick = interval(Duration::from_millis(ctx.args.upload_interval_ms.max(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n = 0u64;
    while ctx.running() {
        tick.tick().await;
        n += 1;
        let head = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"f\"; filename=\"soak-{n}.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{BOUNDARY}--\r\n");
        let mut request = format!(
            "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; \
             boundary={BOUNDARY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
            ctx.target.addr,
            head.len() + size + tail.len()
        )
        .into_bytes();
        request.extend_from_slice(&data);
        request.extend_from_slice(tail.as_bytes());
        let outcome = async {
            let mut stream = timeout(ctx.connect_timeout, TcpStream::connect(ctx.target.addr))
                .await
                .context("connect timed out")??;
            let reply = exchange(&mut stream, &request).await?;
            let body = String::from_utf8_lossy(&reply.body);
            if reply.status != 200 || !body.contains(&format!("\"bytes\":{size}")) {
                bail!("status {}: {body}", reply.status);
            }
            Ok(())
        };
        match outcome.await {
            Ok(()) => ctx.tally.op("uploads", 1),
            Err(err) => ctx.tally.error("upload", format!("{err:#}")),
        }
    }
}

/// Opens --churn-rate echo connections per second: one message, its echo, a close.
async fn churn(ctx: Arc<Ctx>) {
    let mut tick = interval(Duration::from_secs_f64(1.0 / ctx.args.churn_rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let in_flight = Arc::new(Semaphore::new(64));
    let mut n = 0u64;
    while ctx.running() {
        tick.tick().await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        n += 1;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let text = format!("churn {n}");
            let outcome = async {
                let mut ws = ctx.ws(None, "echo").await?;
                ws.send(Message::text(text.clone())).await?;
                loop {
                    match timeout(ANSWER, ws.next())
                        .await
                        .context("no echo in time")?
                    {
                        Some(Ok(Message::Text(echo))) if echo.as_str() == text => break,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        other => bail!("expected the echo, got {other:?}"),
                    }
                }
                ws.close(None).await?;
                // The server's answer to the close, then the end.
                timeout(ANSWER, async { while let Some(Ok(_)) = ws.next().await {} })
                    .await
                    .context("the close was not answered in time")?;
                anyhow::Ok(())
            };
            match outcome.await {
                Ok(()) => ctx.tally.op("churned_connections", 1),
                Err(err) => ctx.tally.error("churn", format!("{err:#}")),
            }
        });
    }
}
