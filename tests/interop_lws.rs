//! Interoperability with libwebsockets' reference test programs (Debian's
//! `libwebsockets-test-server` package): their client against Switchboard on the protocols
//! both speak, and our health-check client (`switchboard probe`) against their server.
//!
//! Without the package these tests say so and pass, unless `SWITCHBOARD_REQUIRE_LWS=1` (set by
//! CI, which installs the package) makes a missing program a failure.

mod support;

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use support::{ChildGuard, Server};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};

const LWS_CLIENT: &str = "/usr/bin/libwebsockets-test-client";
const LWS_SERVER: &str = "/usr/bin/libwebsockets-test-server";

/// Whether the libwebsockets programs are installed; fails if CI requires them.
fn lws_available() -> bool {
    let present =
        std::path::Path::new(LWS_CLIENT).exists() && std::path::Path::new(LWS_SERVER).exists();
    if !present {
        assert!(
            std::env::var("SWITCHBOARD_REQUIRE_LWS").as_deref() != Ok("1"),
            "libwebsockets-test-server package is required but not installed"
        );
        eprintln!("libwebsockets test programs not installed; interop not checked");
    }
    present
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, protocol: &str) -> Socket {
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        protocol
    );
    socket
}

async fn next_text(socket: &mut Socket) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The counter values the client logged, from lines like "rx 2 '17'".
fn counter_lines(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|line| line.split(" rx ").nth(1))
        .filter_map(|rest| rest.split('\'').nth(1))
        .filter_map(|number| number.parse().ok())
        .collect()
}

/// `libwebsockets-test-client` opens a dumb-increment and a mirror connection to Switchboard:
/// it must log the counter it receives, and its drawing commands must reach another member of
/// the default mirror instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libwebsockets_test_client_talks_to_switchboard() {
    if !lws_available() {
        return;
    }
    // libwebsockets' test client offers permessage-deflate and, once a server accepts it,
    // spins in its service loop (this version; its own test server never accepts it on these
    // protocols). So this test runs without compression; the README lists it as a known issue.
    let server = Server::start(&["--workers", "2", "--compression", "off"]);
    let mut observer = connect(&server.ws_url("/"), "lws-mirror-protocol").await;

    // Its log goes to a file: it logs every write, and a full pipe would stall it.
    let log_path = std::env::temp_dir().join(format!("lws-client-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut client = ChildGuard(
        Command::new(LWS_CLIENT)
            .args([
                "127.0.0.1".to_string(),
                format!("--port={}", server.addr.port()),
                "-d".into(),
                "15".into(),
            ])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("start libwebsockets-test-client"),
    );

    // Drawing commands from the libwebsockets client, as the observer sees them.
    let mut circles = Vec::new();
    while circles.len() < 20 {
        let text = next_text(&mut observer).await;
        circles.push(text);
    }
    // The counter runs until the client has logged at least 10 values (bounded); then the
    // client is stopped (by its PID).
    let deadline = Instant::now() + Duration::from_secs(15);
    while counter_lines(&std::fs::read_to_string(&log_path).unwrap_or_default()).len() < 10
        && Instant::now() < deadline
        && client.try_wait().unwrap().is_none()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.stop();
    let log = std::fs::read_to_string(&log_path).unwrap();
    std::fs::remove_file(&log_path).ok();

    for circle in &circles {
        let fields: Vec<&str> = circle.trim_end_matches(';').split(' ').collect();
        assert_eq!(fields.len(), 5, "a circle command: {circle:?}");
        assert_eq!(fields[0], "c");
        assert!(
            fields[1].starts_with('#') && fields[1].len() == 7,
            "{circle:?}"
        );
        assert!(
            fields[2..].iter().all(|n| n.parse::<u32>().is_ok()),
            "{circle:?}"
        );
    }
    assert!(
        log.contains("dumb: LWS_CALLBACK_CLIENT_ESTABLISHED"),
        "log:\n{log}"
    );
    assert!(
        log.contains("mirror: LWS_CALLBACK_CLIENT_ESTABLISHED"),
        "log:\n{log}"
    );
    let counters = counter_lines(&log);
    assert!(
        counters.len() >= 10,
        "counter lines: {counters:?}\nlog:\n{log}"
    );
    assert!(
        counters.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "the counter increases by one: {counters:?}"
    );
    assert_eq!(counters[0], 0, "the counter starts at 0");
}

/// Runs `switchboard probe URL` to its end, for at most 10 s: (exit code, stdout, stderr).
fn probe(url: &str) -> (i32, String, String) {
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["probe", url, "--timeout", "3s"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchboard probe"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            panic!("switchboard probe {url} still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut output = std::process::Output {
        status: child.wait().expect("probe status"),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut output.stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut output.stderr)
        .unwrap();
    (
        output.status.code().expect("the probe exited by itself"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Our health-check client, `switchboard probe`, against a server that is not ours:
/// `libwebsockets-test-server` answers with lower-case header names and its own framing. The
/// probe must pass on its page (exit 0, the status line on standard output) and fail on its 404
/// (exit 1, one line naming the URL and the status), as it does against Switchboard.
#[test]
fn our_probe_reads_libwebsockets_test_server_answers() {
    if !lws_available() {
        return;
    }
    let port = {
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap().port()
    };
    let mut lws = ChildGuard(
        Command::new(LWS_SERVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start libwebsockets-test-server"),
    );
    // Listening once a connection is accepted (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline || lws.try_wait().unwrap().is_some() {
            panic!("libwebsockets-test-server did not listen on {port} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let page = format!("http://127.0.0.1:{port}/");
    let (code, stdout, stderr) = probe(&page);
    let missing = format!("http://127.0.0.1:{port}/no-such-file");
    let (missing_code, missing_stdout, missing_stderr) = probe(&missing);
    lws.stop();

    assert_eq!(code, 0, "stdout {stdout:?} stderr {stderr:?}");
    assert_eq!(stdout.trim(), "HTTP/1.1 200 OK");
    assert_eq!(stderr, "");
    assert_eq!(
        missing_code, 1,
        "stdout {missing_stdout:?} stderr {missing_stderr:?}"
    );
    assert_eq!(missing_stdout, "");
    assert_eq!(missing_stderr.lines().count(), 1, "{missing_stderr:?}");
    assert!(
        missing_stderr.contains(&missing) && missing_stderr.contains("404"),
        "names the URL and the status: {missing_stderr:?}"
    );
}
