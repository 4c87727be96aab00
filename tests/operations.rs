//! Operations, end to end: the WebSocket session cap (a flag, or derived from the
//! file-descriptor limit) answered with 503 + Retry-After; the graceful drain on SIGTERM/SIGINT
//! (1001 "going away", readiness 503, exit 0, a second signal exits at once); health, readiness,
//! the JSON status and the Prometheus metrics (parsed, and seen to move); the JSON config file
//! and its precedence; the pid file and daemon mode. Every test runs the real binary and talks to
//! it over real sockets, and every wait is bounded.

mod support;

use std::{
    fs, io,
    net::SocketAddr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use support::{project_static_dir, send_signal, server_command, Server};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{sleep, timeout},
};
use tokio_tungstenite::{
    tungstenite::{
        self,
        client::IntoClientRequest,
        http::HeaderValue,
        protocol::{frame::coding::CloseCode, CloseFrame},
        Message,
    },
    MaybeTlsStream, WebSocketStream,
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The longest any single step (a connect, a request, a reply) may take.
const STEP: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// WebSocket clients

/// Tries to open a WebSocket on `/` offering `protocol` (if any).
async fn try_connect(addr: SocketAddr, protocol: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    if let Some(protocol) = protocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocol).unwrap(),
        );
    }
    let (ws, _) = timeout(STEP, tokio_tungstenite::connect_async(request))
        .await
        .expect("the handshake is answered within 10 s")?;
    Ok(ws)
}

/// Opens a WebSocket and waits until the server's session runs (it answers a ping only then).
async fn connect(addr: SocketAddr, protocol: Option<&str>) -> Ws {
    let mut ws = try_connect(addr, protocol).await.expect("connect");
    ws.send(Message::Ping("ready?".into())).await.expect("ping");
    loop {
        match next_message(&mut ws).await {
            Message::Pong(payload) if payload == "ready?" => return ws,
            Message::Pong(_) | Message::Ping(_) => {}
            other => panic!("expected the pong, got {other:?}"),
        }
    }
}

/// The next message (pings included), within [`STEP`].
async fn next_message(ws: &mut Ws) -> Message {
    match timeout(STEP, ws.next()).await {
        Ok(Some(Ok(message))) => message,
        Ok(other) => panic!("the connection ended: {other:?}"),
        Err(_) => panic!("no message within {STEP:?}"),
    }
}

/// Sends `text` and expects it back (echo protocol).
async fn assert_echoes(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    loop {
        match next_message(ws).await {
            Message::Text(echo) => {
                assert_eq!(echo.as_str(), text);
                return;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected the echo of {text:?}, got {other:?}"),
        }
    }
}

/// Closes with 1000 and reads until the server ends the connection; returns the server's close
/// frame.
async fn close_normally(mut ws: Ws) -> Option<CloseFrame> {
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .expect("send close");
    read_until_closed(&mut ws).await
}

/// Reads (answering the server's close, as the library does) until the connection ends;
/// returns the close frame the server sent, if any.
async fn read_until_closed(ws: &mut Ws) -> Option<CloseFrame> {
    let mut close = None;
    let deadline = Instant::now() + STEP;
    loop {
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            ws.next(),
        )
        .await
        {
            Ok(Some(Ok(Message::Close(frame)))) => close = frame,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return close,
            Err(_) => panic!("the connection did not end within {STEP:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 (for keep-alive connections, refused upgrades and holdout WebSockets)

#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn upgrade_request(protocol: Option<&str>) -> String {
    let mut request = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                       Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                       Sec-WebSocket-Version: 13\r\n"
        .to_owned();
    if let Some(protocol) = protocol {
        request.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
    }
    request.push_str("\r\n");
    request
}

fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

/// Reads one response: the head, then a Content-Length body (none for a 101).
async fn read_response(stream: &mut TcpStream) -> io::Result<RawResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, head.clone()))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let mut response = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if status == 101 {
        return Ok(response);
    }
    let length: usize = response
        .header("content-length")
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Content-Length"))?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    response.body = buf[head_end..head_end + length].to_vec();
    Ok(response)
}

/// Sends `request` on `stream` and reads the response, within [`STEP`].
async fn exchange(stream: &mut TcpStream, request: &str) -> Result<RawResponse, String> {
    let work = async {
        stream.write_all(request.as_bytes()).await?;
        read_response(stream).await
    };
    match timeout(STEP, work).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(err)) => Err(format!("{err}")),
        Err(_) => Err(format!("no response within {STEP:?}")),
    }
}

/// One request on a new connection.
async fn raw_request(addr: SocketAddr, request: &str) -> Result<RawResponse, String> {
    let mut stream = match timeout(STEP, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err(format!("connect: {err}")),
        Err(_) => return Err("connect timed out".to_owned()),
    };
    exchange(&mut stream, request).await
}

/// A WebSocket that never reads after its handshake: it never answers the server's close, so
/// only a timeout ends it.
async fn holdout(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let response = exchange(&mut stream, &upgrade_request(None))
        .await
        .expect("handshake");
    assert_eq!(response.status, 101, "{response:?}");
    stream
}

// ---------------------------------------------------------------------------------------------
// HTTP with reqwest, and the metrics

fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(STEP).build().unwrap()
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    let response = client.get(url).send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// A scrape of the metrics, parsed by a Prometheus text-format parser.
struct Scraped {
    text: String,
    parsed: prometheus_parse::Scrape,
}

impl Scraped {
    async fn fetch(client: &reqwest::Client, url: &str) -> Scraped {
        let response = client.get(url).send().await.expect("GET metrics");
        assert_eq!(response.status(), 200, "{url}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "Content-Type {content_type}"
        );
        let text = response.text().await.expect("metrics body");
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics ends with # EOF: {text}"
        );
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
            .expect("the exposition parses");
        assert!(!parsed.samples.is_empty(), "no samples in {text}");
        Scraped { text, parsed }
    }

    /// The sample `name` with these labels.
    fn sample(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.parsed
            .samples
            .iter()
            .find(|sample| {
                sample.metric == name
                    && labels
                        .iter()
                        .all(|(key, value)| sample.labels.get(key) == Some(value))
            })
            .map(|sample| match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{name} is not a plain value: {other:?}"),
            })
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in\n{}", self.text))
    }

    /// A counter family: declared `# TYPE family counter`, its sample named `family_total`.
    fn counter(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        assert!(
            self.text
                .lines()
                .any(|line| line == format!("# TYPE {family} counter")),
            "{family} is not declared a counter in\n{}",
            self.text
        );
        self.sample(&format!("{family}_total"), labels)
    }

    fn gauge(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        assert!(
            self.text
                .lines()
                .any(|line| line == format!("# TYPE {family} gauge")),
            "{family} is not declared a gauge in\n{}",
            self.text
        );
        self.sample(family, labels)
    }
}

/// Scrapes until `check` holds (bounded); returns the last scrape.
async fn scrape_until(
    client: &reqwest::Client,
    url: &str,
    what: &str,
    check: impl Fn(&Scraped) -> bool,
) -> Scraped {
    let deadline = Instant::now() + STEP;
    loop {
        let scraped = Scraped::fetch(client, url).await;
        if check(&scraped) {
            return scraped;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {STEP:?}:\n{}",
            scraped.text
        );
        sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Processes, files

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "switchboard-ops-{}-{name}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `command` to its end, for at most `limit` (then it is killed and the test fails).
/// Returns the exit status and standard error.
fn run_bounded(mut command: Command, limit: Duration) -> (ExitStatus, String) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, reader.join().unwrap())
}

/// Polls `check` every 10 ms until it gives a value, for at most `limit`.
fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` is a live process (a zombie waiting to be reaped counts as gone).
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Raises this test process's soft RLIMIT_NOFILE to its hard limit (many clients).
fn raise_own_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The session cap

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cap_refuses_the_excess_with_503_and_the_server_keeps_serving() {
    let server = Server::start(&["--max-connections", "3"]);
    let client = http_client();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(connect(server.addr, None).await);
    }

    // The fourth upgrade: 503, Retry-After, a reason.
    let refused = raw_request(server.addr, &upgrade_request(None))
        .await
        .expect("the fourth upgrade is answered");
    assert_eq!(refused.status, 503, "{refused:?}");
    let retry_after: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after > 0);
    let reason = refused.text();
    assert!(
        reason.contains("limit of 3 WebSocket connections"),
        "reason: {reason:?}"
    );
    // What a WebSocket library sees.
    match try_connect(server.addr, Some("echo")).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
        Ok(_) => panic!("a fourth session was accepted"),
        Err(other) => panic!("expected HTTP 503, got {other:?}"),
    }

    // Still healthy: the sessions echo, health and static files answer.
    for (i, ws) in sessions.iter_mut().enumerate() {
        assert_echoes(ws, &format!("still here {i}")).await;
    }
    assert_eq!(
        get(&client, &server.http_url("/healthz")).await,
        (200, "ok\n".to_owned())
    );
    let (status, page) = get(&client, &server.http_url("/")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<html") || page.contains("<!DOCTYPE"),
        "{page}"
    );
    let metrics = Scraped::fetch(&client, &server.http_url("/metrics")).await;
    assert_eq!(
        metrics.counter("switchboard_websocket_connections_refused", &[]),
        2.0
    );
    assert_eq!(
        metrics.gauge("switchboard_websocket_connections_max", &[]),
        3.0
    );

    // One leaves; a newcomer gets its place (once the server has let the old session go).
    close_normally(sessions.pop().unwrap()).await;
    let deadline = Instant::now() + STEP;
    let mut newcomer = loop {
        match try_connect(server.addr, None).await {
            Ok(ws) => break ws,
            Err(tungstenite::Error::Http(response)) if response.status() == 503 => {
                assert!(Instant::now() < deadline, "the freed slot never came back");
                sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("connect: {other:?}"),
        }
    };
    assert_echoes(&mut newcomer, "newcomer").await;
    for ws in &mut sessions {
        assert_echoes(ws, "old-timer").await;
    }
}

/// Starts the server under RLIMIT_NOFILE 256 (soft and hard, so it cannot raise it).
fn start_with_256_fds() -> Server {
    raise_own_fd_limit();
    let mut command = server_command(&[]);
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256,
                rlim_max: 256,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Server::start_command(command)
}

/// (connections, WebSocket sessions) from "at most N connections, M WebSocket sessions" in the
/// start-up line.
fn derived_caps(server: &Server) -> (u64, u64) {
    // The harness records a line just after it reports the address in it: wait for it.
    let line = server.wait_for_log("listening on", STEP).unwrap();
    assert!(line.contains("file-descriptor limit 256"), "{line}");
    let counts = line
        .split("at most ")
        .nth(1)
        .unwrap_or_else(|| panic!("no `at most N connections, M WebSocket sessions`: {line}"));
    let numbers: Vec<u64> = counts
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .take(2)
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(
        counts.starts_with(&format!("{} connections, ", numbers[0]))
            && counts.contains(&format!("{} WebSocket sessions", numbers[1])),
        "{line}"
    );
    (numbers[0], numbers[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caps_are_derived_from_the_file_descriptor_limit() {
    let server = start_with_256_fds();
    let (connections, sessions) = derived_caps(&server);
    assert_eq!(connections, 256 - 64);
    assert!(
        (1..=connections).contains(&sessions),
        "{sessions} sessions for {connections} connections"
    );
    let client = http_client();
    let metrics = Scraped::fetch(&client, &server.http_url("/metrics")).await;
    assert_eq!(
        metrics.gauge("switchboard_file_descriptor_limit", &[]),
        256.0
    );
    assert_eq!(
        metrics.gauge("switchboard_websocket_connections_max", &[]),
        sessions as f64
    );
    let (_, body) = get(&client, &server.http_url("/status")).await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["file_descriptor_limit"], 256, "{status}");
    assert_eq!(status["connections"]["max"], sessions, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_fd_derived_cap_upgrades_get_503_and_http_still_answers() {
    let server = start_with_256_fds();
    let (_, sessions) = derived_caps(&server);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..sessions {
        clients.push(connect(server.addr, None).await);
    }
    println!("{sessions} sessions open after {:?}", started.elapsed());

    // The excess is refused with 503, and the server keeps serving.
    let excess = raw_request(server.addr, &upgrade_request(None)).await;
    let health = raw_request(server.addr, &get_request("/healthz")).await;
    let excess = excess.unwrap_or_else(|err| {
        panic!(
            "with {sessions} sessions open, an upgrade got no answer ({err}); \
             /healthz: {health:?}"
        )
    });
    assert_eq!(excess.status, 503, "{excess:?}");
    assert!(excess.header("retry-after").is_some());
    let health = health.expect("/healthz with every session slot taken");
    assert_eq!(health.status, 200);
    for _ in 0..2 {
        let refused = raw_request(server.addr, &upgrade_request(None))
            .await
            .expect("another upgrade over the cap");
        assert_eq!(refused.status, 503, "{refused:?}");
    }
    assert_echoes(clients.last_mut().unwrap(), "the last one").await;
    assert_echoes(&mut clients[0], "the first one").await;
}

// ---------------------------------------------------------------------------------------------
// 2. The graceful drain

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_session_with_1001_and_exits_zero() {
    let mut server = Server::start(&["--shutdown-timeout", "5"]);
    let mut clients = Vec::new();
    for protocol in [
        None,
        Some("echo"),
        Some("echo"),
        Some("lws-mirror-protocol"),
        Some("lws-mirror-protocol"),
    ] {
        let mut ws = connect(server.addr, protocol).await;
        if protocol != Some("lws-mirror-protocol") {
            assert_echoes(&mut ws, "before").await;
        }
        clients.push((protocol, ws));
    }

    server.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|(protocol, mut ws)| {
            tokio::spawn(async move { (protocol, read_until_closed(&mut ws).await) })
        })
        .collect();
    for reader in readers {
        let (protocol, close) = reader.await.expect("reader");
        let close = close.unwrap_or_else(|| panic!("{protocol:?}: no close frame"));
        assert_eq!(u16::from(close.code), 1001, "{protocol:?}: {close:?}");
        assert_eq!(close.reason.as_str(), "going away", "{protocol:?}");
    }
    let status = server
        .wait_exit_async(Duration::from_secs(8))
        .await
        .expect("the server exits within the shutdown timeout");
    let took = signalled.elapsed();
    println!("exited {status:?} {took:?} after SIGTERM");
    assert!(status.success(), "{status:?}; log: {:?}", server.log());
    assert!(
        took < Duration::from_secs(5),
        "every client closed, yet the server waited {took:?}"
    );
    assert!(
        server
            .wait_for_log("shutting down: closing 5 WebSocket connections", STEP)
            .is_some(),
        "{:#?}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_graceful_shutdown_is_logged() {
    let mut server = Server::start(&["--shutdown-timeout", "5"]);
    let ws = connect(server.addr, None).await;
    server.signal(libc::SIGTERM);
    let mut ws = ws;
    let close = read_until_closed(&mut ws).await.expect("close frame");
    assert_eq!(u16::from(close.code), 1001);
    let status = server
        .wait_exit_async(Duration::from_secs(8))
        .await
        .expect("exit");
    assert!(status.success());
    assert!(
        server
            .wait_for_log("shutdown complete", Duration::from_secs(2))
            .is_some(),
        "log: {:#?}",
        server.log()
    );
}

/// A SIGTERM sent the moment the server says it is listening (what an orchestrator stopping a
/// just-started container does) is a graceful shutdown, not a kill that leaves the pid file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_start_is_a_graceful_shutdown() {
    for attempt in 0..10 {
        let dir = TempDir::new("early-sigterm");
        let pid_file = dir.path("switchboard.pid");
        let mut server = Server::start(&["--pid-file", pid_file.to_str().unwrap()]);
        server.signal(libc::SIGTERM);
        let status = server
            .wait_exit_async(Duration::from_secs(8))
            .await
            .expect("exit on SIGTERM");
        assert!(status.success(), "attempt {attempt}: {status:?}");
        assert!(
            !pid_file.exists(),
            "attempt {attempt}: the pid file is removed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_the_close_cannot_stop_the_exit() {
    let mut server = Server::start(&["--shutdown-timeout", "5"]);
    let _silent = holdout(server.addr).await;
    server.signal(libc::SIGTERM);
    let signalled = Instant::now();
    server
        .wait_for_log("shutting down", STEP)
        .expect("the server logs the shutdown");
    // The server gives the client its close timeout (5 s, as long as the shutdown timeout) to
    // answer, then exits anyway, successfully.
    let status = server
        .wait_exit_async(Duration::from_secs(9))
        .await
        .expect("the server exits soon after its shutdown timeout");
    let took = signalled.elapsed();
    println!("exited {status:?} {took:?} after SIGTERM");
    assert!(status.success(), "{status:?}; log: {:?}", server.log());
    assert!(
        took >= Duration::from_millis(4500),
        "gave the silent client only {took:?} of its 5 s"
    );
}

/// The drain first waits for a WebSocket that never answers its close (about 1.5 s, its close
/// timeout), then for the HTTP requests in progress: an upload that never ends must not
/// keep the server past `--shutdown-timeout`. (actix-server's graceful stop has its own timeout,
/// counted from when it starts, which is after the WebSocket drain; a forced stop sent at the
/// deadline used to wait behind it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_still_running_at_the_deadline_does_not_delay_the_exit() {
    let uploads = TempDir::new("deadline-upload");
    let upload_dir = uploads.path("");
    let mut server = Server::start(&[
        "--shutdown-timeout",
        "4",
        "--close-timeout",
        "1500ms",
        "--body-timeout",
        "60",
        "--upload-dir",
        upload_dir.to_str().unwrap(),
    ]);
    let _silent = holdout(server.addr).await;
    // An upload of 1 GiB that trickles 1 KiB every 50 ms.
    let mut upload = TcpStream::connect(server.addr).await.unwrap();
    let head = "--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"slow.bin\"\r\n\r\n";
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n\
         Content-Length: {}\r\n\r\n{head}",
        head.len() + (1 << 30)
    );
    upload.write_all(request.as_bytes()).await.unwrap();
    let (mut upload_read, mut upload_write) = upload.into_split();
    let trickle = tokio::spawn(async move {
        while upload_write.write_all(&[b'x'; 1024]).await.is_ok() {
            sleep(Duration::from_millis(50)).await;
        }
    });
    // The server is storing it once its file exists.
    let storing = poll(STEP, || {
        fs::read_dir(&upload_dir)
            .ok()?
            .next()
            .is_some()
            .then_some(())
    });
    assert!(storing.is_some(), "the upload's file never appeared");

    server.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let status = server
        .wait_exit_async(Duration::from_secs(8))
        .await
        .expect("the server exits");
    let took = signalled.elapsed();
    println!("exited {status:?} {took:?} after SIGTERM");
    assert!(status.success(), "{status:?}; log: {:#?}", server.log());
    assert!(
        took < Duration::from_secs(4 + 1),
        "exited {took:?} after SIGTERM with --shutdown-timeout 4; log: {:#?}",
        server.log()
    );
    assert!(
        server
            .wait_for_log(
                "shutdown timeout: ending the HTTP requests still in progress",
                STEP
            )
            .is_some(),
        "log: {:#?}",
        server.log()
    );
    // The uploader sees its connection end (no answer: the request was cut).
    let mut rest = Vec::new();
    let end = timeout(STEP, upload_read.read_to_end(&mut rest)).await;
    assert!(end.is_ok(), "the upload's connection did not end");
    trickle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_503_on_a_kept_alive_connection_while_draining() {
    let mut server = Server::start(&["--shutdown-timeout", "5"]);
    // A WebSocket that never answers its close keeps the server draining.
    let _silent = holdout(server.addr).await;
    let mut kept_alive = TcpStream::connect(server.addr).await.unwrap();
    let ready = exchange(&mut kept_alive, &get_request("/readyz"))
        .await
        .unwrap();
    assert_eq!((ready.status, ready.text().as_str()), (200, "ready\n"));

    server.signal(libc::SIGTERM);
    server
        .wait_for_log("shutting down", STEP)
        .expect("the server logs the shutdown");
    let draining = exchange(&mut kept_alive, &get_request("/readyz"))
        .await
        .expect("/readyz on the kept-alive connection while draining");
    assert_eq!(
        (draining.status, draining.text().as_str()),
        (503, "draining\n")
    );
    let health = exchange(&mut kept_alive, &get_request("/healthz"))
        .await
        .expect("/healthz while draining");
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    let status = exchange(&mut kept_alive, &get_request("/status"))
        .await
        .expect("/status while draining");
    let status: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(status["draining"], true, "{status}");
    drop(kept_alive);
    let exit = server
        .wait_exit_async(Duration::from_secs(9))
        .await
        .expect("the server exits soon after its shutdown timeout");
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_while_draining_exits_at_once() {
    let mut server = Server::start(&["--shutdown-timeout", "30", "--close-timeout", "30"]);
    let _silent = holdout(server.addr).await;
    server.signal(libc::SIGTERM);
    server
        .wait_for_log("shutting down", STEP)
        .expect("the server logs the shutdown");
    // Still draining: the silent client would keep it for 30 s.
    assert!(server.is_running(), "exited before the second signal");

    server.signal(libc::SIGINT);
    let signalled = Instant::now();
    let status = server
        .wait_exit_async(Duration::from_secs(3))
        .await
        .expect("the second signal ends the process at once");
    println!(
        "exited {status:?} {:?} after the second signal",
        signalled.elapsed()
    );
    // Not the status of a finished drain (0), nor a death by the signal: the server's own
    // "exiting now", status 1, said in its log.
    assert_eq!(
        status.code(),
        Some(1),
        "{status:?}; log: {:?}",
        server.log()
    );
    assert!(
        server
            .wait_for_log("second signal: exiting now", STEP)
            .is_some(),
        "log: {:#?}",
        server.log()
    );
    assert!(
        server
            .wait_for_log("shutdown complete", Duration::ZERO)
            .is_none(),
        "an abandoned drain is not a complete shutdown: {:#?}",
        server.log()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Observability

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_status_and_metrics_report_what_happens() {
    let server = Server::start(&[]);
    let client = http_client();
    let metrics_url = server.http_url("/metrics");
    assert_eq!(
        get(&client, &server.http_url("/healthz")).await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(
        get(&client, &server.http_url("/readyz")).await,
        (200, "ready\n".to_owned())
    );

    let mut echo_a = connect(server.addr, None).await;
    let echo_b = connect(server.addr, Some("echo")).await;
    let mirror = connect(server.addr, Some("lws-mirror-protocol")).await;

    let (code, body) = get(&client, &server.http_url("/status")).await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    assert_eq!(status["draining"], false, "{status}");
    assert_eq!(status["connections"]["open"], 3, "{status}");
    assert_eq!(status["connections"]["by_protocol"]["echo"], 2, "{status}");
    assert_eq!(
        status["connections"]["by_protocol"]["lws-mirror-protocol"], 1,
        "{status}"
    );
    for key in ["received", "received_bytes", "sent", "sent_bytes"] {
        assert!(status["messages"][key].is_u64(), "messages.{key}: {status}");
    }
    let received_before = status["messages"]["received"].as_u64().unwrap();

    let before = Scraped::fetch(&client, &metrics_url).await;
    assert_eq!(
        before.gauge("switchboard_websocket_connections", &[("protocol", "echo")]),
        2.0
    );
    assert_eq!(
        before.gauge(
            "switchboard_websocket_connections",
            &[("protocol", "lws-mirror-protocol")]
        ),
        1.0
    );
    assert_eq!(before.gauge("switchboard_draining", &[]), 0.0);

    // Messages.
    const N: usize = 10;
    for i in 0..N {
        assert_echoes(&mut echo_a, &format!("message {i}")).await;
    }
    let after = Scraped::fetch(&client, &metrics_url).await;
    let received = "switchboard_websocket_messages_received";
    let sent = "switchboard_websocket_messages_sent";
    assert_eq!(
        after.counter(received, &[]) - before.counter(received, &[]),
        N as f64
    );
    assert!(after.counter(sent, &[]) - before.counter(sent, &[]) >= N as f64);
    assert!(
        after.counter("switchboard_websocket_received_bytes", &[])
            > before.counter("switchboard_websocket_received_bytes", &[])
    );
    let (_, body) = get(&client, &server.http_url("/status")).await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["messages"]["received"].as_u64().unwrap() - received_before,
        N as u64,
        "{status}"
    );

    // HTTP responses by status. The scrape that took `before` is itself counted after it.
    let http = "switchboard_http_responses";
    let before = Scraped::fetch(&client, &metrics_url).await;
    let (code, _) = get(&client, &server.http_url("/index.html")).await;
    assert_eq!(code, 200);
    let (code, _) = get(&client, &server.http_url("/no-such-file.html")).await;
    assert_eq!(code, 404);
    let after = Scraped::fetch(&client, &metrics_url).await;
    assert_eq!(
        after.counter(http, &[("status", "200")]) - before.counter(http, &[("status", "200")]),
        2.0,
        "the scrape and the static GET"
    );
    assert_eq!(
        after.counter(http, &[("status", "404")]) - before.counter(http, &[("status", "404")]),
        1.0
    );

    // Close codes: the server answers a 1000 with a 1000.
    let closes = "switchboard_close_codes_sent";
    let before_close = after.counter(closes, &[("code", "1000")]);
    let reply = close_normally(echo_b)
        .await
        .expect("the server's close frame");
    assert_eq!(u16::from(reply.code), 1000);
    let after = scrape_until(&client, &metrics_url, "close code 1000 counted", |s| {
        s.counter(closes, &[("code", "1000")]) > before_close
            && s.gauge("switchboard_websocket_connections", &[("protocol", "echo")]) == 1.0
    })
    .await;
    assert_eq!(
        after.counter(closes, &[("code", "1000")]),
        before_close + 1.0
    );
    drop(mirror);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_paths_are_configurable() {
    let server = Server::start(&[
        "--health-path",
        "/live",
        "--ready-path",
        "/ready2",
        "--status-path",
        "/st",
        "--metrics-path",
        "/prom",
    ]);
    let client = http_client();
    assert_eq!(
        get(&client, &server.http_url("/live")).await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(
        get(&client, &server.http_url("/ready2")).await,
        (200, "ready\n".to_owned())
    );
    let (code, body) = get(&client, &server.http_url("/st")).await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    assert_eq!(status["draining"], false);
    let metrics = Scraped::fetch(&client, &server.http_url("/prom")).await;
    metrics.counter("switchboard_websocket_connections_opened", &[]);
    // The default paths now fall through to the static file server.
    for path in ["/healthz", "/readyz", "/status", "/metrics"] {
        let (code, _) = get(&client, &server.http_url(path)).await;
        assert_eq!(code, 404, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_served_on_their_own_address() {
    let metrics_addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let server = Server::start(&["--metrics-bind", &metrics_addr.to_string()]);
    let client = http_client();
    let metrics = Scraped::fetch(&client, &format!("http://{metrics_addr}/metrics")).await;
    // Sessions: the connections the fd limit allows (limit - 64), less one in twenty (at least
    // 16) kept for HTTP, so that health checks and 503s still get through at the cap.
    let connections = metrics.gauge("switchboard_file_descriptor_limit", &[]) as u64 - 64;
    let reserve = (connections / 20).max(16).min(connections / 2);
    assert_eq!(
        metrics.gauge("switchboard_websocket_connections_max", &[]) as u64,
        connections - reserve
    );
    let (code, _) = get(&client, &server.http_url("/metrics")).await;
    assert_eq!(code, 404, "the main port no longer serves the metrics");
    assert_eq!(get(&client, &server.http_url("/healthz")).await.0, 200);
    let line = server
        .wait_for_log("metrics on", STEP)
        .expect("the metrics address is logged");
    assert!(line.contains(&metrics_addr.to_string()), "{line}");
}

// ---------------------------------------------------------------------------------------------
// 4. The config file

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_values_yield_to_env_vars_and_flags() {
    let dir = TempDir::new("precedence");
    let file = dir.path("switchboard.json");
    fs::write(
        &file,
        r#"{"max-connections": 1, "health-path": "/file-health", "ping_interval": "1s"}"#,
    )
    .unwrap();
    let mut command =
        server_command(&["--config", file.to_str().unwrap(), "--max-connections", "2"]);
    command.env("SWITCHBOARD_HEALTH_PATH", "/env-health");
    let server = Server::start_command(command);
    let client = http_client();

    // The env var beats the file.
    assert_eq!(
        get(&client, &server.http_url("/env-health")).await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(get(&client, &server.http_url("/file-health")).await.0, 404);
    assert_eq!(get(&client, &server.http_url("/healthz")).await.0, 404);

    // The flag beats the file: two sessions, the third refused.
    let mut first = connect(server.addr, None).await;
    let _second = connect(server.addr, None).await;
    let third = raw_request(server.addr, &upgrade_request(None))
        .await
        .unwrap();
    assert_eq!(third.status, 503, "{third:?}");

    // The file beats the default (30 s): pings every second.
    let started = Instant::now();
    loop {
        if let Message::Ping(_) = next_message(&mut first).await {
            break;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "first ping after {:?}",
        started.elapsed()
    );
}

/// Runs the server with `--config` holding `contents`; it must exit 2 with one line on standard
/// error containing each of `expected`.
fn assert_config_refused(contents: &str, expected: &[&str]) {
    let dir = TempDir::new("refused");
    let file = dir.path("bad.json");
    fs::write(&file, contents).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .args(["--bind", "127.0.0.1:0", "--static-dir"])
        .arg(project_static_dir())
        .arg("--config")
        .arg(&file);
    let (status, stderr) = run_bounded(command, STEP);
    assert_eq!(status.code(), Some(2), "{contents}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{contents}: one line, got {stderr:?}");
    for text in expected {
        assert!(lines[0].contains(text), "{contents}: {stderr:?}");
    }
}

#[test]
fn a_bad_config_file_stops_the_server_with_status_2_naming_the_key() {
    assert_config_refused(r#"{"max-conections": 3}"#, &["max-conections"]);
    assert_config_refused(r#"{"workers": "many"}"#, &["workers"]);
    assert_config_refused(r#"{"max-backlog": "lots"}"#, &["max-backlog"]);
    assert_config_refused(r#"{"max_backlog": "lots"}"#, &["max_backlog"]);
    assert_config_refused(r#"{"health-path": "healthz"}"#, &["health-path"]);
    assert_config_refused("bind = 127.0.0.1:7681", &["not JSON"]);
    assert_config_refused(r#"["max-connections", 3]"#, &["JSON object"]);
    // A bare number is seconds; a write window of seconds would hold every broadcast that long.
    assert_config_refused(r#"{"write-coalesce": "10"}"#, &["write-coalesce", "10ms"]);
}

// ---------------------------------------------------------------------------------------------
// 5. Pid file and daemon

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pid_file_holds_the_pid_refuses_a_second_server_and_goes_at_exit() {
    let dir = TempDir::new("pidfile");
    let pid_file = dir.path("switchboard.pid");
    let pid_arg = pid_file.to_str().unwrap();
    let mut first = Server::start(&["--pid-file", pid_arg]);
    let written = poll(STEP, || read_pid(&pid_file)).expect("the pid file is written");
    assert_eq!(written, first.pid());

    let (status, stderr) = run_bounded(server_command(&["--pid-file", pid_arg]), STEP);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to start"), "{stderr}");
    assert!(stderr.contains(&first.pid().to_string()), "{stderr}");
    assert_eq!(
        read_pid(&pid_file),
        Some(first.pid()),
        "the refused server left the pid file alone"
    );

    first.signal(libc::SIGTERM);
    let status = first.wait_exit_async(STEP).await.expect("exit on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!pid_file.exists(), "the pid file is removed at exit");
}

/// Kills a daemon (found through its pid file) that a failed test left running.
struct DaemonGuard {
    pid: Option<u32>,
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let ours = fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.contains("switchboard"));
            if ours && process_alive(pid) {
                send_signal(pid, libc::SIGKILL);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_mode_detaches_logs_to_a_file_and_stops_on_sigterm() {
    let dir = TempDir::new("daemon");
    let pid_file = dir.path("switchboard.pid");
    let log_file = dir.path("switchboard.log");
    let mut guard = DaemonGuard { pid: None };
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .args(["--daemon", "--bind", "127.0.0.1:0", "--static-dir"])
        .arg(project_static_dir())
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--log-file")
        .arg(&log_file)
        .env_remove("RUST_LOG")
        .env("SWITCHBOARD_LOG_LEVEL", "info");
    let started = Instant::now();
    let mut launcher = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let launcher_pid = launcher.id();
    let status = poll(STEP, || launcher.try_wait().unwrap()).unwrap_or_else(|| {
        let _ = launcher.kill();
        let _ = launcher.wait();
        panic!("the launching process did not return")
    });
    let returned_after = started.elapsed();
    println!("the launcher returned {status:?} after {returned_after:?}");
    assert!(status.success(), "{status:?}");
    assert!(returned_after < Duration::from_secs(5));

    let pid = poll(STEP, || read_pid(&pid_file)).expect("the daemon writes its pid file");
    guard.pid = Some(pid);
    assert_ne!(
        pid, launcher_pid,
        "the pid file names the daemon, not the launcher"
    );
    assert!(process_alive(pid), "the daemon {pid} runs");

    let addr: SocketAddr = poll(STEP, || {
        let log = fs::read_to_string(&log_file).ok()?;
        let rest = log.split("listening on ").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    })
    .expect("the log file has the listening line");
    let client = http_client();
    assert_eq!(
        get(&client, &format!("http://{addr}/healthz")).await,
        (200, "ok\n".to_owned())
    );

    send_signal(pid, libc::SIGTERM);
    assert!(
        poll(STEP, || (!process_alive(pid)).then_some(())).is_some(),
        "the daemon {pid} still runs 10 s after SIGTERM"
    );
    guard.pid = None;
    assert!(
        poll(STEP, || (!pid_file.exists()).then_some(())).is_some(),
        "the pid file is removed"
    );
    let log = fs::read_to_string(&log_file).unwrap();
    assert!(log.contains("shutting down"), "{log}");
}
