//! `switchboard probe URL`, the health check of the container image, end to end: it exits 0 on
//! the real server's `/readyz`, 1 with a one-line reason on an error status, a closed port or a
//! peer that never answers (within its timeout), and 2 on bad arguments.

mod support;

use std::{
    io::Read,
    net::TcpListener,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use support::Server;

/// Runs `switchboard probe ARGS...` to its end, for at most `limit`.
fn probe(args: &[&str], limit: Duration) -> (i32, String, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("probe")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn switchboard probe");
    let deadline = started + limit;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("switchboard probe {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed();
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("probe output");
    (
        status.code().expect("probe exited by itself"),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
        elapsed,
    )
}

const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn a_ready_server_passes_the_probe() {
    let server = Server::start(&[]);
    let (code, stdout, stderr, _) = probe(&[&server.http_url("/readyz")], LIMIT);
    assert_eq!(code, 0, "stdout {stdout:?} stderr {stderr:?}");
    assert_eq!(stdout.trim(), "HTTP/1.1 200 OK");
    assert_eq!(stderr, "");
}

#[test]
fn an_error_status_fails_the_probe_with_the_status_line() {
    let server = Server::start(&[]);
    let url = server.http_url("/no-such-file");
    let (code, stdout, stderr, _) = probe(&[&url], LIMIT);
    assert_eq!(code, 1, "stdout {stdout:?} stderr {stderr:?}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(
        stderr.contains(&url) && stderr.contains("404"),
        "names the URL and the status: {stderr:?}"
    );
}

#[test]
fn a_closed_port_fails_the_probe() {
    // A port that was free a moment ago and has no listener now.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, stderr, _) = probe(&[&format!("http://127.0.0.1:{port}/readyz")], LIMIT);
    assert_eq!(code, 1, "stderr {stderr:?}");
    assert!(stderr.contains("cannot connect"), "{stderr:?}");
}

#[test]
fn a_peer_that_never_answers_fails_the_probe_after_its_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and read, but never answer, until the probe gives up and closes.
    let holder = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        sink
    });
    let (code, _, stderr, elapsed) = probe(
        &[&format!("http://{addr}/readyz"), "--timeout", "300ms"],
        LIMIT,
    );
    assert_eq!(code, 1, "stderr {stderr:?}");
    assert!(stderr.contains("no answer within 300ms"), "{stderr:?}");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "gave up after {elapsed:?}"
    );
    let request = String::from_utf8(holder.join().unwrap()).unwrap();
    assert!(
        request.starts_with("GET /readyz HTTP/1.1\r\n")
            && request.contains(&format!("Host: {addr}\r\n")),
        "the probe sent {request:?}"
    );
}

#[test]
fn bad_arguments_exit_with_status_2_and_the_usage() {
    for args in [
        &[][..],
        &["https://127.0.0.1/"][..],
        &["http://127.0.0.1/", "--timeout", "soon"][..],
        &["http://127.0.0.1/", "--verbose"][..],
    ] {
        let (code, _, stderr, _) = probe(args, LIMIT);
        assert_eq!(code, 2, "{args:?}: {stderr:?}");
        assert!(
            stderr.contains("usage: switchboard probe"),
            "{args:?}: {stderr:?}"
        );
    }
}
