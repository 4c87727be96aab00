//! TLS on the listener (`--tls-cert`, `--tls-key`), end to end: a certificate authority made at
//! test time, clients that verify the server against it; wss echo, broadcast and chat; https
//! static files with ranges and uploads; the close handshake ending in TLS close_notify and the
//! server's FIN; a stalled TLS reader ended by the timers; the drain on SIGTERM; the
//! certificate reloaded on SIGHUP without dropping a connection; start-up mistakes.

mod support;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::{
    chat_client::ChatClient,
    project_static_dir,
    raw_ws::OutFrame,
    tls::{self as tls_support, TestPki, TlsEnd},
    ws_client::{server_socket_for, wait_until_server_lets_go, Ws},
    Server, TempDir,
};
use tokio::{io::AsyncWriteExt, time::timeout};
use tokio_tungstenite::tungstenite::Message;

/// Starts a TLS server with `pki`'s current certificate and extra flags.
fn start_tls(pki: &TestPki, extra: &[&str]) -> Server {
    let flags = pki.server_flags();
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A PKI with a certificate (serial 1) installed.
fn pki_with_cert() -> TestPki {
    let pki = TestPki::new();
    pki.install(&pki.issue(1));
    pki
}

async fn bounded(limit: Duration, test: impl std::future::Future<Output = ()>) {
    timeout(limit, test)
        .await
        .unwrap_or_else(|_| panic!("the test completes within {limit:?}"));
}

/// The next data message (pings and pongs skipped), within 10 s.
async fn next_data(ws: &mut Ws) -> Message {
    loop {
        match timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(message)) => return message,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_echo_and_https_static_files_with_ranges_and_uploads() {
    let pki = pki_with_cert();
    let uploads = TempDir::new("tls-uploads");
    let server = start_tls(&pki, &["--upload-dir", uploads.path().to_str().unwrap()]);
    bounded(Duration::from_secs(60), async {
        // wss: the echo protocol, text and a binary message larger than a TLS record.
        let mut ws = tls_support::wss(server.addr, "/", Some("echo"), pki.client_config()).await;
        ws.send(Message::text("hello over TLS")).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::text("hello over TLS"));
        let big: Vec<u8> = (0..300_000u32).map(|n| (n % 251) as u8).collect();
        ws.send(Message::binary(big.clone())).await.unwrap();
        assert_eq!(next_data(&mut ws).await, Message::binary(big));

        // https: a static file, whole and by ranges, verified against the test authority.
        let client = pki.https_client();
        let url = format!("https://{}/index.html", server.addr);
        let expected = std::fs::read(project_static_dir().join("index.html")).unwrap();
        let whole = client.get(&url).send().await.expect("https GET");
        assert_eq!(whole.status(), 200);
        assert_eq!(whole.bytes().await.unwrap(), expected);
        let part = client
            .get(&url)
            .header("Range", "bytes=5-14")
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(
            part.headers()["content-range"],
            format!("bytes 5-14/{}", expected.len()).as_str()
        );
        assert_eq!(part.bytes().await.unwrap(), expected[5..15]);
        let tail = client
            .get(&url)
            .header("Range", "bytes=-7")
            .send()
            .await
            .unwrap();
        assert_eq!(tail.status(), 206);
        assert_eq!(tail.bytes().await.unwrap(), expected[expected.len() - 7..]);

        // https: a multipart upload reaches --upload-dir intact.
        let file: Vec<u8> = (0..200_000u32).map(|n| (n % 241) as u8).collect();
        let boundary = "tls-test-boundary-0f3c";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(&file);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let reply = client
            .post(format!("https://{}/upload", server.addr))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .expect("https upload");
        let status = reply.status();
        let report = reply.text().await.unwrap();
        assert!(status.is_success(), "upload: {status} {report}");
        let stored: Vec<_> = std::fs::read_dir(uploads.path())
            .unwrap()
            .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
            .collect();
        assert_eq!(stored.len(), 1, "one file stored: {report}");
        assert!(stored[0] == file, "the stored file differs from the upload");

        // Plain HTTP to the TLS port gets no page.
        let plain = reqwest::Client::new()
            .get(format!("http://{}/index.html", server.addr))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        assert!(
            plain
                .map(|response| response.status() != 200)
                .unwrap_or(true),
            "the TLS port must not serve plain HTTP"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_broadcast_reaches_every_member_in_order_on_both_workers() {
    let pki = pki_with_cert();
    let server = start_tls(&pki, &["--workers", "2"]);
    bounded(Duration::from_secs(60), async {
        let config = pki.client_config();
        let mut members = Vec::new();
        for _ in 0..4 {
            members.push(
                tls_support::wss(
                    server.addr,
                    "/?mirror=tls",
                    Some("lws-mirror-protocol"),
                    config.clone(),
                )
                .await,
            );
        }
        let mut sender = members.remove(0);
        const COUNT: usize = 200;
        for n in 0..COUNT {
            // Small ones (the direct-write path on plain TCP) and some larger than a record.
            let text = if n % 50 == 0 {
                format!("{n:05}{}", "x".repeat(40_000))
            } else {
                format!("{n:05}")
            };
            sender.send(Message::text(text)).await.unwrap();
        }
        for ws in members.iter_mut().chain(std::iter::once(&mut sender)) {
            for n in 0..COUNT {
                let Message::Text(text) = next_data(ws).await else {
                    panic!("text expected");
                };
                assert_eq!(&text[..5], format!("{n:05}"), "order of message {n}");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_over_wss() {
    let pki = pki_with_cert();
    let server = start_tls(&pki, &[]);
    bounded(Duration::from_secs(60), async {
        let config = pki.client_config();
        let mut ann = ChatClient {
            ws: tls_support::wss(server.addr, "/", Some("chat"), config.clone()).await,
        };
        let mut bob = ChatClient {
            ws: tls_support::wss(server.addr, "/", Some("chat"), config).await,
        };
        ann.join("lobby", "ann").await;
        let joined = bob.join("lobby", "bob").await;
        assert_eq!(joined["members"], json!(["ann", "bob"]));
        bob.say("lobby", "hello over wss").await;
        for client in [&mut ann, &mut bob] {
            let message = client.next_message("lobby").await;
            assert_eq!(message["text"], "hello over wss");
            assert_eq!(message["nick"], "bob");
        }
        ann.close().await;
        bob.close().await;
    })
    .await;
}

/// RFC 6455 §7.1.1: after the close handshake the server closes TCP first. Over TLS that must
/// not lose the close frame (still in the TLS layer's buffer), and it ends with close_notify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_ends_tls_cleanly_right_after_the_close_handshake() {
    let pki = pki_with_cert();
    let server = start_tls(&pki, &["--idle-timeout", "1"]);
    bounded(Duration::from_secs(60), async {
        // The client closes: the answer, then close_notify and the end, without the client's
        // own end of the connection (it keeps its write side open).
        let mut tls = tls_support::raw_tls(server.addr, pki.client_config()).await;
        let head = tls_support::upgrade(&mut tls, "/", "echo").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        tls.write_all(&OutFrame::close(1000, "bye").encode())
            .await
            .unwrap();
        let sent = Instant::now();
        let (bytes, end) = tls_support::read_to_end(&mut tls, Duration::from_secs(5)).await;
        let took = sent.elapsed();
        println!("client close: the server ended the connection {took:?} after the close");
        assert_eq!(
            bytes,
            [0x88, 0x02, 0x03, 0xE8],
            "the close answered with its code"
        );
        assert_eq!(end, TlsEnd::CloseNotify);
        assert!(
            took < Duration::from_millis(700),
            "the server must close first, not wait for the client ({took:?})"
        );

        // The server closes (idle timeout): the client answers, then the server ends it.
        let mut tls = tls_support::raw_tls(server.addr, pki.client_config()).await;
        let head = tls_support::upgrade(&mut tls, "/", "echo").await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut first = [0u8; 2];
        timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_exact(&mut tls, &mut first),
        )
        .await
        .expect("the idle close within 5 s")
        .unwrap();
        assert_eq!(first[0], 0x88, "a close frame");
        let mut rest = vec![0u8; usize::from(first[1])];
        tokio::io::AsyncReadExt::read_exact(&mut tls, &mut rest)
            .await
            .unwrap();
        assert_eq!(u16::from_be_bytes([rest[0], rest[1]]), 1001);
        tls.write_all(&OutFrame::close(1001, "").encode())
            .await
            .unwrap();
        let answered = Instant::now();
        let (bytes, end) = tls_support::read_to_end(&mut tls, Duration::from_secs(5)).await;
        let took = answered.elapsed();
        println!("server close: the connection ended {took:?} after the client's answer");
        assert!(bytes.is_empty(), "nothing after the close frame: {bytes:?}");
        assert_eq!(end, TlsEnd::CloseNotify);
        assert!(took < Duration::from_millis(700), "{took:?}");
    })
    .await;
}

/// A wss member that stops reading while its instance floods: its TCP window fills, so not even
/// a close frame can reach it. The slow-consumer policy and the close timeout must end it
/// anyway (the TLS connection's socket is shut down; nothing is written past TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_reader_is_closed_by_the_timers() {
    let pki = pki_with_cert();
    let server = start_tls(
        &pki,
        &[
            "--max-backlog",
            "64KiB",
            "--slow-consumer",
            "close",
            "--close-timeout",
            "1",
        ],
    );
    bounded(Duration::from_secs(60), async {
        let config = pki.client_config();
        let stream = tls_support::small_window_stream(server.addr).await;
        let client_port = stream.local_addr().unwrap().port();
        // Joined, then never read again.
        let _stalled = tls_support::wss_on(
            stream,
            server.addr,
            "/?mirror=stall",
            Some("lws-mirror-protocol"),
            config.clone(),
        )
        .await;
        let mut flooder = tls_support::wss(
            server.addr,
            "/?mirror=stall",
            Some("lws-mirror-protocol"),
            config,
        )
        .await;
        let flood_started = Instant::now();
        let payload = Bytes::from(vec![b'f'; 32 * 1024]);
        for n in 0..200 {
            flooder
                .send(Message::Binary(payload.clone()))
                .await
                .unwrap();
            match next_data(&mut flooder).await {
                Message::Binary(data) if data.len() == payload.len() => {}
                other => panic!("flooder, message {n}: got {other:?}"),
            }
        }
        let (pid, port) = (server.pid(), server.addr.port());
        let jammed = server_socket_for(pid, port, client_port).expect("server-side socket");
        println!(
            "flood of 6.25 MiB done in {:?}; {} bytes unsent to the stalled reader",
            flood_started.elapsed(),
            jammed.tx_queue
        );
        assert!(
            server
                .log()
                .iter()
                .any(|line| line.contains("slow consumer") && line.contains("1008")),
            "the stalled reader should have gone over its backlog and been closed with 1008"
        );
        let released = wait_until_server_lets_go(
            pid,
            port,
            client_port,
            Instant::now(),
            Duration::from_secs(10),
            "the stalled TLS connection, after the flood,",
        )
        .await;
        println!("the server let go of the stalled TLS connection {released:?} after the flood");
        // The flooder was not harmed.
        flooder.send(Message::text("still here")).await.unwrap();
        assert_eq!(next_data(&mut flooder).await, Message::text("still here"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_wss_connections_with_going_away() {
    let pki = pki_with_cert();
    let mut server = start_tls(&pki, &["--shutdown-timeout", "10"]);
    bounded(Duration::from_secs(60), async {
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients
                .push(tls_support::wss(server.addr, "/", Some("echo"), pki.client_config()).await);
        }
        server.signal(libc::SIGTERM);
        for ws in &mut clients {
            match next_data(ws).await {
                Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
                other => panic!("expected close 1001, got {other:?}"),
            }
        }
        let status = server
            .wait_exit_async(Duration::from_secs(10))
            .await
            .expect("the server exits within 10 s of SIGTERM");
        assert!(status.success(), "exit status {status:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_for_new_connections_only() {
    let pki = TestPki::new();
    let first = pki.issue(1);
    pki.install(&first);
    let mut server = start_tls(&pki, &[]);
    bounded(Duration::from_secs(60), async {
        let config = pki.client_config();
        assert_eq!(
            tls_support::presented_certificate(server.addr, &pki).await,
            first.der
        );
        let mut old = tls_support::wss(server.addr, "/", Some("echo"), config.clone()).await;

        let second = pki.issue(2);
        pki.install(&second);
        server.signal(libc::SIGHUP);
        server
            .wait_for_log("TLS certificate reloaded", Duration::from_secs(10))
            .expect("the reload is logged");
        assert_eq!(
            tls_support::presented_certificate(server.addr, &pki).await,
            second.der,
            "a new connection gets the new certificate"
        );
        old.send(Message::text("still open")).await.unwrap();
        assert_eq!(next_data(&mut old).await, Message::text("still open"));

        // A broken new pair is logged and the current one kept.
        std::fs::write(pki.cert_path(), "not a certificate").unwrap();
        server.signal(libc::SIGHUP);
        let line = server
            .wait_for_log("keeping the current certificate", Duration::from_secs(10))
            .expect("the failed reload is logged");
        assert!(
            line.contains(&pki.cert_path().display().to_string()),
            "{line}"
        );
        // A key that is not the certificate's is refused too.
        std::fs::write(pki.cert_path(), &first.cert_pem).unwrap();
        server.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server
            .log()
            .iter()
            .any(|line| line.contains("does not match the certificate"))
        {
            assert!(Instant::now() < deadline, "the key mismatch is logged");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            tls_support::presented_certificate(server.addr, &pki).await,
            second.der,
            "the current certificate is kept"
        );
        assert!(server.is_running());
        old.send(Message::text("and still")).await.unwrap();
        assert_eq!(next_data(&mut old).await, Message::text("and still"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_tls_has_nothing_to_reload_and_does_not_stop_the_server() {
    let mut server = Server::start(&[]);
    server.signal(libc::SIGHUP);
    server
        .wait_for_log("nothing to reload", Duration::from_secs(10))
        .expect("SIGHUP is logged");
    assert!(server.is_running());
    let response = reqwest::get(server.http_url("/index.html")).await.unwrap();
    assert_eq!(response.status(), 200);
}

/// Runs the server with `args` and `env` and expects it to refuse to start: exit status 2 and
/// one line on standard error containing every piece of `expected`.
fn refuses_to_start(args: &[&str], env: &[(&str, &str)], expected: &[&str]) {
    let mut command = support::server_command(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run switchboard");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    for piece in expected {
        assert!(lines[0].contains(piece), "{piece:?} in {stderr:?}");
    }
}

#[test]
fn start_up_mistakes_name_the_file_and_exit_2() {
    let pki = TestPki::new();
    let good = pki.issue(1);
    pki.install(&good);
    let other = pki.issue(2);
    let cert = pki.cert_path().display().to_string();
    let key = pki.key_path().display().to_string();
    let other_key = pki.path("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).unwrap();
    let other_key = other_key.display().to_string();
    let missing = pki.path("missing.pem").display().to_string();

    refuses_to_start(&["--tls-cert", &cert], &[], &["--tls-key"]);
    refuses_to_start(&["--tls-key", &key], &[], &["--tls-cert"]);
    refuses_to_start(&[], &[("SWITCHBOARD_TLS_CERT", &cert)], &["--tls-key"]);
    refuses_to_start(
        &["--tls-cert", &missing, "--tls-key", &key],
        &[],
        &[&missing],
    );
    refuses_to_start(
        &["--tls-cert", &cert, "--tls-key", &missing],
        &[],
        &[&missing],
    );
    refuses_to_start(
        &["--tls-cert", &cert, "--tls-key", &other_key],
        &[],
        &[&other_key, &cert, "does not match"],
    );
    refuses_to_start(
        &["--tls-cert", &key, "--tls-key", &key],
        &[],
        &[&key, "certificate"],
    );
    refuses_to_start(
        &["--tls-cert", &cert, "--tls-key", &cert],
        &[],
        &[&cert, "private key"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_can_come_from_env_or_the_config_file() {
    let pki = pki_with_cert();
    let expected = std::fs::read_to_string(pki.cert_path()).unwrap();
    let expected = rustls::pki_types::pem::PemObject::from_pem_slice(expected.as_bytes())
        .map(|der: rustls::pki_types::CertificateDer<'static>| der)
        .unwrap();

    let mut command = support::server_command(&[]);
    command
        .env("SWITCHBOARD_TLS_CERT", pki.cert_path())
        .env("SWITCHBOARD_TLS_KEY", pki.key_path());
    let server = Server::start_command(command);
    assert_eq!(
        tls_support::presented_certificate(server.addr, &pki).await,
        expected
    );
    drop(server);

    let config_file = pki.path("switchboard.json");
    std::fs::write(
        &config_file,
        json!({"tls-cert": pki.cert_path(), "tls-key": pki.key_path()}).to_string(),
    )
    .unwrap();
    let server = Server::start(&["--config", config_file.to_str().unwrap()]);
    assert_eq!(
        tls_support::presented_certificate(server.addr, &pki).await,
        expected
    );
}
