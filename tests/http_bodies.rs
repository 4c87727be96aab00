//! Request bodies and the HTTP front door, end to end: the real binary, real sockets.
//!
//! - `POST /upload`: multipart bodies, sized (`Content-Length`) and chunked, streamed to
//!   `--upload-dir` (a 2 GiB upload in bounded server memory), with the report of every part,
//!   safe and unique file names, `--max-upload` (413), `--body-timeout` (408), and no file left
//!   behind by a refused request.
//! - `POST /api/publish`: bearer token, reach count, delivery to one mirror instance only, and
//!   the refusals (401, 404, 400, 413).
//! - The front door: `--head-timeout` against a slowloris client while others are served,
//!   `--max-head` and actix-http's own head limit (431), malformed requests (400), unknown
//!   methods (405), and `--keep-alive`.
//!
//! `reqwest` for well-formed requests; raw HTTP/1.1 over `TcpStream` where the test must control
//! the bytes and their timing.

mod support;

use std::{
    collections::BTreeSet,
    fs,
    io::{self, Write},
    net::{SocketAddr, TcpStream},
    os::unix::fs::FileExt,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{stream, SinkExt, StreamExt};
use reqwest::{header, Body, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::{
    raw_http::{is_timeout, read_more, read_reply, RawReply},
    Server, TempDir,
};
use tokio::{net::TcpStream as TokioTcpStream, sync::RwLock, time::timeout};
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, http::HeaderValue, Message},
    MaybeTlsStream, WebSocketStream,
};

/// The 2 GiB upload keeps both cores busy; it holds this exclusively, and the tests that assert
/// timings hold it shared, so that load never distorts their measurements.
static CPU: RwLock<()> = RwLock::const_new(());

const BOUNDARY: &str = "switchboard-test-7d1f3a9c";
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// The names of the entries of `dir`.
fn entries(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits up to `within` for `dir` to hold exactly `expected`; the entries it holds at the end.
fn wait_for_entries(dir: &Path, expected: &[&str], within: Duration) -> BTreeSet<String> {
    let expected: BTreeSet<String> = expected.iter().map(|name| name.to_string()).collect();
    let deadline = Instant::now() + within;
    loop {
        let now = entries(dir);
        if now == expected || Instant::now() >= deadline {
            return now;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// splitmix64: the 8 bytes at word `index` of the generated data, so any slice of a large
/// upload can be regenerated without the rest.
fn mix(index: u64) -> u64 {
    let mut z = index.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Deterministic pseudo-random bytes `offset..offset + len` (both multiples of 8).
fn random_bytes(offset: u64, len: usize) -> Vec<u8> {
    assert!(offset.is_multiple_of(8) && len.is_multiple_of(8));
    let mut out = Vec::with_capacity(len);
    for word in offset / 8..(offset + len as u64) / 8 {
        out.extend_from_slice(&mix(word).to_le_bytes());
    }
    out
}

/// Small test data of any length.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// multipart/form-data bodies, built by hand

fn multipart_content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// The delimiter and headers that open a part (`filename` as raw bytes, so a test can put
/// anything in it).
fn part_head(name: &str, filename: Option<&[u8]>) -> Vec<u8> {
    let mut head =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"").into_bytes();
    if let Some(filename) = filename {
        head.extend_from_slice(b"; filename=\"");
        head.extend_from_slice(filename);
        head.extend_from_slice(b"\"\r\nContent-Type: application/octet-stream");
    }
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// What closes the body after the last part's data.
fn multipart_end() -> Vec<u8> {
    format!("\r\n--{BOUNDARY}--\r\n").into_bytes()
}

/// One part of a form, and what the server must report for it.
struct Part {
    field: &'static str,
    /// The file name as sent (`None`: a plain field).
    filename: Option<&'static [u8]>,
    /// The file name the server reports, when it differs from the bytes sent (quoted-string
    /// escapes removed).
    reported_file: Option<&'static str>,
    /// The name the server must store it under.
    stored_as: Option<&'static str>,
    data: Vec<u8>,
}

impl Part {
    fn field(field: &'static str, value: &[u8]) -> Part {
        Part {
            field,
            filename: None,
            reported_file: None,
            stored_as: None,
            data: value.to_vec(),
        }
    }

    fn file(field: &'static str, filename: &'static [u8], stored_as: &'static str) -> Part {
        Part {
            field,
            filename: Some(filename),
            reported_file: None,
            stored_as: Some(stored_as),
            data: Vec::new(),
        }
    }

    fn data(mut self, data: Vec<u8>) -> Part {
        self.data = data;
        self
    }

    fn reported_as(mut self, file: &'static str) -> Part {
        self.reported_file = Some(file);
        self
    }
}

fn form_body(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(&part_head(part.field, part.filename));
        body.extend_from_slice(&part.data);
    }
    body.extend_from_slice(&multipart_end());
    body
}

/// Checks the server's JSON report against `parts`, and the stored files against their data.
fn check_report(report: &Value, parts: &[Part], dir: &Path) {
    let reported = report["parts"].as_array().expect("`parts` array");
    assert_eq!(reported.len(), parts.len(), "report: {report}");
    for (part, got) in parts.iter().zip(reported) {
        let expected = json!({
            "field": part.field,
            "file": part.reported_file.map(str::to_owned).or_else(|| {
                part.filename
                    .map(|name| String::from_utf8_lossy(name).into_owned())
            }),
            "stored_as": part.stored_as,
            "bytes": part.data.len(),
            "sha256": sha256_hex(&part.data),
        });
        assert_eq!(got, &expected, "report: {report}");
        if let Some(stored_as) = part.stored_as {
            let stored = fs::read(dir.join(stored_as)).unwrap();
            assert!(
                stored == part.data,
                "{stored_as}: stored {} bytes differ from the {} sent",
                stored.len(),
                part.data.len()
            );
        }
    }
    let total: usize = parts.iter().map(|part| part.data.len()).sum();
    assert_eq!(report["bytes"], json!(total), "report: {report}");
}

/// A body sent with `Transfer-Encoding: chunked`, cut into pieces of irregular sizes (so that
/// delimiters and headers straddle chunk boundaries).
fn chunked_body(data: Vec<u8>) -> Body {
    const SIZES: [usize; 6] = [1, 17, 4096, 65_541, 300_007, 3];
    let data = Bytes::from(data);
    let mut pieces = Vec::new();
    let mut offset = 0;
    let mut i = 0;
    while offset < data.len() {
        let end = (offset + SIZES[i % SIZES.len()]).min(data.len());
        pieces.push(Ok::<Bytes, io::Error>(data.slice(offset..end)));
        offset = end;
        i += 1;
    }
    Body::wrap_stream(stream::iter(pieces))
}

struct Reply {
    status: StatusCode,
    headers: header::HeaderMap,
    text: String,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|value| value.to_str().unwrap())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|err| panic!("JSON expected ({err}): {:?}", self.text))
    }
}

async fn post(url: &str, headers: &[(&str, &str)], body: Body) -> Reply {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut request = client.post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("response");
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        text: response.text().await.expect("response body"),
    }
}

async fn post_form(server: &Server, body: Body) -> Reply {
    let content_type = multipart_content_type();
    post(
        &server.http_url("/upload"),
        &[("content-type", &content_type)],
        body,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1

fn connect(addr: SocketAddr) -> TcpStream {
    support::raw_http::connect(addr, IO_TIMEOUT)
}

/// Waits until the server ends the connection (EOF or reset); `Err` with what happened instead.
fn wait_for_close(stream: &mut TcpStream, deadline: Instant) -> Result<(), String> {
    let mut buf = Vec::new();
    match read_more(stream, &mut buf, deadline) {
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::ConnectionReset => Ok(()),
        Err(err) if is_timeout(&err) => Err("still open".to_owned()),
        Err(err) => Err(format!("read error {err}")),
        Ok(()) => Err(format!(
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&buf)
        )),
    }
}

/// Whether a response has started to arrive (waits at most `wait`).
fn reply_pending(stream: &TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0; 1];
    match stream.peek(&mut byte) {
        Ok(_) => true,
        Err(err) if is_timeout(&err) => false,
        Err(_) => true,
    }
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A plain `GET` on a fresh connection; the reply and how long it took.
fn raw_get(addr: SocketAddr, path: &str) -> (RawReply, Duration) {
    let started = Instant::now();
    let mut stream = connect(addr);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let reply = read_reply(&mut stream, Instant::now() + IO_TIMEOUT).expect("reply");
    (reply, started.elapsed())
}

// ---------------------------------------------------------------------------------------------
// 1. A 2 GiB upload in bounded memory

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_gib_chunked_upload_is_streamed_in_bounded_memory() {
    const TOTAL: u64 = 2 << 30;
    const PIECE: usize = 256 * KIB;
    const RSS_LIMIT_KIB: u64 = 64 * 1024;

    let _cpu = CPU.write().await;
    let dir = TempDir::new("2gib");
    let server = Arc::new(Server::start(&["--upload-dir", dir.arg()]));
    let baseline = server.rss_kib();

    // Sample the server's RSS every 100 ms until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let server = server.clone();
        let stop = stop.clone();
        async move {
            let (mut peak, mut samples) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(server.rss_kib());
                samples += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (peak, samples)
        }
    });

    // The body: one file part of TOTAL generated bytes, hashed as they are produced, never
    // held whole.
    let digest = Arc::new(Mutex::new(None::<String>));
    let data = stream::unfold((0u64, Some(Sha256::new())), {
        let digest = digest.clone();
        move |(offset, hasher)| {
            let digest = digest.clone();
            async move {
                let mut hasher = hasher?;
                if offset >= TOTAL {
                    *digest.lock().unwrap() = Some(hex::encode(hasher.finalize()));
                    return None;
                }
                let len = PIECE.min((TOTAL - offset) as usize);
                let piece = random_bytes(offset, len);
                hasher.update(&piece);
                Some((
                    Ok::<Bytes, io::Error>(Bytes::from(piece)),
                    (offset + len as u64, Some(hasher)),
                ))
            }
        }
    });
    let head = Bytes::from(part_head("big", Some(b"big.bin")));
    let end = Bytes::from(multipart_end());
    let body = stream::iter([Ok(head)])
        .chain(data)
        .chain(stream::iter([Ok(end)]));

    let started = Instant::now();
    let reply = timeout(
        Duration::from_secs(180),
        post_form(&server, Body::wrap_stream(body)),
    )
    .await
    .expect("the 2 GiB upload finishes within 180 s");
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (peak, samples) = sampler.await.unwrap();

    println!(
        "2 GiB chunked upload: {:.1} s ({:.0} MiB/s); server RSS {} KiB before, peak {} KiB \
         over {samples} samples",
        elapsed.as_secs_f64(),
        TOTAL as f64 / MIB as f64 / elapsed.as_secs_f64(),
        baseline,
        peak
    );
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(samples >= 10, "only {samples} RSS samples");
    assert!(
        peak < RSS_LIMIT_KIB,
        "server RSS peaked at {peak} KiB (limit {RSS_LIMIT_KIB} KiB)"
    );

    let sent_digest = digest
        .lock()
        .unwrap()
        .clone()
        .expect("whole body generated");
    let report = reply.json();
    assert_eq!(
        report,
        json!({
            "parts": [{
                "field": "big",
                "file": "big.bin",
                "stored_as": "big.bin",
                "bytes": TOTAL,
                "sha256": sent_digest,
            }],
            "bytes": TOTAL,
        })
    );

    // The stored file: its size, and its first and last MiB byte for byte.
    let path = dir.path().join("big.bin");
    let file = fs::File::open(&path).unwrap();
    assert_eq!(file.metadata().unwrap().len(), TOTAL);
    let mut buf = vec![0; MIB];
    for offset in [0, TOTAL - MIB as u64] {
        file.read_exact_at(&mut buf, offset).unwrap();
        assert!(
            buf == random_bytes(offset, MIB),
            "stored bytes differ at {offset}.."
        );
    }
    drop(file);
    assert_eq!(entries(dir.path()), BTreeSet::from(["big.bin".to_owned()]));
}

// ---------------------------------------------------------------------------------------------
// 2. Uploads: every part reported and stored; safe, unique names

fn sample_parts(tag: &'static str) -> Vec<Part> {
    let (alpha, beta, empty): (&'static str, &'static str, &'static str) = match tag {
        "sized" => ("alpha.txt", "beta.bin", "empty.txt"),
        _ => ("gamma.txt", "delta.bin", "nothing.txt"),
    };
    vec![
        Part::field("note", format!("hello from the {tag} upload").as_bytes()),
        // Text that starts like a delimiter without being one.
        Part::file("a", alpha.as_bytes(), alpha).data(
            format!(
                "alpha\r\n--{}\r\n--not-the-boundary\r\n-",
                &BOUNDARY[..BOUNDARY.len() - 1]
            )
            .into_bytes(),
        ),
        // Several of the server's 256 KiB write blocks, and not a multiple of them.
        Part::file("b", beta.as_bytes(), beta).data(pattern(700_001, 7)),
        Part::file("c", empty.as_bytes(), empty),
        Part::field("empty-field", b""),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sized_and_chunked_uploads_report_and_store_every_part() {
    let dir = TempDir::new("parts");
    let server = Server::start(&["--upload-dir", dir.arg()]);

    let sized = sample_parts("sized");
    let reply = post_form(&server, Body::from(form_body(&sized))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(reply.header("content-type").starts_with("application/json"));
    check_report(&reply.json(), &sized, dir.path());

    let chunked = sample_parts("chunked");
    let reply = post_form(&server, chunked_body(form_body(&chunked))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    check_report(&reply.json(), &chunked, dir.path());

    // Files only: the plain fields are reported, not stored.
    let expected: BTreeSet<String> = [
        "alpha.txt",
        "beta.bin",
        "empty.txt",
        "gamma.txt",
        "delta.bin",
        "nothing.txt",
    ]
    .iter()
    .map(|name| name.to_string())
    .collect();
    assert_eq!(entries(dir.path()), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_names_are_made_safe_and_never_overwrite() {
    // The upload directory sits two levels down, so that `../../x.txt` would land in `outer`.
    let tmp = TempDir::new("names");
    let outer = tmp.path().join("outer");
    let inner = outer.join("inner");
    let dir = inner.join("uploads");
    fs::create_dir_all(&dir).unwrap();
    let server = Server::start(&["--upload-dir", dir.to_str().unwrap()]);

    let first = vec![
        Part::file("f1", b"../../x.txt", "x.txt").data(b"traversal".to_vec()),
        // Backslashes, escaped as a quoted-string needs them.
        Part::file("f2", b"..\\\\..\\\\win.txt", "win.txt")
            .reported_as("..\\..\\win.txt")
            .data(b"backslashes".to_vec()),
        Part::file("f3", b"/etc/passwd", "passwd").data(b"absolute".to_vec()),
        // A tab is the one control character a part header can carry raw.
        Part::file("f4", b"tab\there.txt", "tabhere.txt").data(b"control".to_vec()),
        Part::file("f5", b".bashrc", "bashrc").data(b"dot-file".to_vec()),
        Part::file("f6", b"..", "upload").data(b"nothing left".to_vec()),
        Part::file("f7", b"dup.txt", "dup.txt").data(b"first dup".to_vec()),
        // The same name twice in one request.
        Part::file("f8", b"dup.txt", "dup-1.txt").data(b"second dup".to_vec()),
        Part::file("f9", b"README", "README").data(b"no extension".to_vec()),
    ];
    let reply = post_form(&server, Body::from(form_body(&first))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    check_report(&reply.json(), &first, &dir);

    // The same names again, in a second request: new names, the first files untouched.
    let second = vec![
        Part::file("g1", b"dup.txt", "dup-2.txt").data(b"third dup".to_vec()),
        Part::file("g2", b"../../x.txt", "x-1.txt").data(b"traversal again".to_vec()),
        Part::file("g3", b"README", "README-1").data(b"again".to_vec()),
        Part::file("g4", b".bashrc", "bashrc-1").data(b"dot-file again".to_vec()),
    ];
    let reply = post_form(&server, Body::from(form_body(&second))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    check_report(&reply.json(), &second, &dir);
    // check_report read every stored file of both requests; the first ones once more:
    for part in &first {
        assert_eq!(
            fs::read(dir.join(part.stored_as.unwrap())).unwrap(),
            part.data
        );
    }

    let stored: BTreeSet<String> = first
        .iter()
        .chain(&second)
        .map(|part| part.stored_as.unwrap().to_owned())
        .collect();
    assert_eq!(entries(&dir), stored);
    // Nothing escaped the upload directory.
    assert_eq!(entries(tmp.path()), BTreeSet::from(["outer".to_owned()]));
    assert_eq!(entries(&outer), BTreeSet::from(["inner".to_owned()]));
    assert_eq!(entries(&inner), BTreeSet::from(["uploads".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_path_as_file_name_is_stored_under_its_last_component() {
    let dir = TempDir::new("windows");
    let server = Server::start(&["--upload-dir", dir.arg()]);
    let parts =
        vec![Part::file("f", b"C:\\Users\\x\\report.pdf", "report.pdf").data(b"pdf".to_vec())];
    let reply = post_form(&server, Body::from(form_body(&parts))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let report = reply.json();
    assert_eq!(report["parts"][0]["stored_as"], "report.pdf", "{report}");
    assert_eq!(fs::read(dir.path().join("report.pdf")).unwrap(), b"pdf");
}

// ---------------------------------------------------------------------------------------------
// 3. Limits and refusals of /upload

#[test]
fn a_sized_upload_over_the_limit_gets_413_before_its_body_is_sent() {
    let dir = TempDir::new("limit-sized");
    let server = Server::start(&["--upload-dir", dir.arg(), "--max-upload", "1MiB"]);
    let mut stream = connect(server.addr);
    // The head of a 3 MiB upload and the first part's head only.
    write!(
        stream,
        "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
        multipart_content_type(),
        3 * MIB
    )
    .unwrap();
    stream
        .write_all(&part_head("f", Some(b"huge.bin")))
        .unwrap();
    let reply = read_reply(&mut stream, Instant::now() + Duration::from_secs(5))
        .expect("a reply before the body is sent");
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(reply.header("connection"), Some("close"));
    let text = String::from_utf8_lossy(&reply.body);
    assert!(text.contains("1048576"), "reason names the limit: {text:?}");
    wait_for_close(&mut stream, Instant::now() + Duration::from_secs(5))
        .expect("connection closed after the 413");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn a_chunked_upload_gets_413_when_it_crosses_the_limit_and_leaves_no_file() {
    let dir = TempDir::new("limit-chunked");
    let server = Server::start(&["--upload-dir", dir.arg(), "--max-upload", "1MiB"]);
    let mut stream = connect(server.addr);
    write!(
        stream,
        "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Type: {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        multipart_content_type()
    )
    .unwrap();

    // A complete first file part, then the start of a 3 MiB second one: 1 MiB - 128 KiB in all.
    let mut body = part_head("first", Some(b"first.txt"));
    body.extend_from_slice(&pattern(100 * KIB, 1));
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(&part_head("second", Some(b"second.bin")));
    let mut sent = body.len();
    stream.write_all(&chunk(&body)).unwrap();
    let filler = pattern(64 * KIB, 2);
    while sent + filler.len() <= MIB - 128 * KIB {
        stream.write_all(&chunk(&filler)).unwrap();
        sent += filler.len();
    }
    // Both files are being written while the body is under the limit.
    let during = wait_for_entries(
        dir.path(),
        &["first.txt", "second.bin"],
        Duration::from_secs(5),
    );
    assert_eq!(
        during,
        BTreeSet::from(["first.txt".to_owned(), "second.bin".to_owned()])
    );
    assert!(
        !reply_pending(&stream, Duration::from_millis(300)),
        "no reply while under the limit"
    );

    // Cross the limit, 64 KiB at a time, until the answer comes.
    let mut sent_at_reply = None;
    while sent < 3 * MIB {
        stream.write_all(&chunk(&filler)).unwrap();
        sent += filler.len();
        if reply_pending(&stream, Duration::from_millis(100)) {
            sent_at_reply = Some(sent);
            break;
        }
    }
    let sent_at_reply = sent_at_reply.expect("413 before the whole 3 MiB body was sent");
    println!("chunked over-limit upload: 413 after {sent_at_reply} body bytes");
    assert!(
        sent_at_reply > MIB,
        "413 at {sent_at_reply} bytes, under the limit"
    );
    let reply = read_reply(&mut stream, Instant::now() + IO_TIMEOUT).expect("reply");
    assert_eq!(reply.status, 413, "{reply:?}");
    // (That the connection should end here too is checked by
    // `a_refused_chunked_body_ends_the_connection`.)
    // The complete first part goes too.
    let after = wait_for_entries(dir.path(), &[], Duration::from_secs(2));
    assert!(after.is_empty(), "left behind: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_upload_gets_400_and_leaves_no_file() {
    let dir = TempDir::new("malformed");
    let server = Server::start(&["--upload-dir", dir.arg()]);
    // A complete part, then a second one cut off: the body ends without the closing delimiter.
    let mut body = part_head("a", Some(b"complete.txt"));
    body.extend_from_slice(b"all of it");
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(&part_head("b", Some(b"cut.txt")));
    body.extend_from_slice(&pattern(300 * KIB, 3));
    let reply = post_form(&server, Body::from(body)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(
        reply.text.starts_with("malformed request body"),
        "{}",
        reply.text
    );
    let after = wait_for_entries(dir.path(), &[], Duration::from_secs(2));
    assert!(after.is_empty(), "left behind: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_refusals_name_their_reason() {
    // No --upload-dir: the endpoint is off.
    let off = Server::start(&[]);
    let reply = post_form(&off, Body::from(form_body(&sample_parts("sized")))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
    assert!(reply.text.contains("--upload-dir"), "{}", reply.text);

    let dir = TempDir::new("refusals");
    let server = Server::start(&["--upload-dir", dir.arg()]);
    let client = reqwest::Client::new();
    for method in [reqwest::Method::GET, reqwest::Method::PUT] {
        let response = client
            .request(method.clone(), server.http_url("/upload"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert_eq!(response.headers()["allow"], "POST", "{method}");
    }
    for content_type in [Some("text/plain"), Some("application/json"), None] {
        let mut headers = vec![];
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type));
        }
        let reply = post(&server.http_url("/upload"), &headers, Body::from("x=1")).await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {}",
            reply.text
        );
        assert!(reply.text.contains("multipart/form-data"), "{}", reply.text);
    }
    assert!(entries(dir.path()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 4. Publishing

type Ws = WebSocketStream<MaybeTlsStream<TokioTcpStream>>;

/// Joins mirror instance `room` and waits until the server's session runs (it answers a ping
/// only then, after it joined its instance).
async fn join_mirror(server: &Server, room: &str) -> Ws {
    let mut request = server
        .ws_url(&format!("/?mirror={room}"))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("lws-mirror-protocol"),
    );
    let (mut ws, response) = timeout(IO_TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake within 10 s")
        .expect("handshake");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "lws-mirror-protocol"
    );
    ws.send(Message::Ping(Bytes::from_static(b"ready?")))
        .await
        .unwrap();
    loop {
        match timeout(IO_TIMEOUT, ws.next()).await.expect("pong") {
            Some(Ok(Message::Pong(payload))) if &payload[..] == b"ready?" => return ws,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected the pong, got {other:?}"),
        }
    }
}

/// The next text message within `wait` (pings and pongs skipped); `None` if none came.
async fn next_text(ws: &mut Ws, wait: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Text(text)))) => return Some(text.as_str().to_owned()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Every client receives `expected` (or, for `None`, nothing within half a second).
async fn expect_all(clients: &mut [Ws], expected: Option<&Value>) {
    let wait = match expected {
        Some(_) => IO_TIMEOUT,
        None => Duration::from_millis(500),
    };
    let received =
        futures_util::future::join_all(clients.iter_mut().map(|ws| next_text(ws, wait))).await;
    for (i, text) in received.into_iter().enumerate() {
        match (expected, text) {
            (None, None) => {}
            (None, Some(text)) => panic!("client {i} received {text:?}"),
            (Some(expected), None) => panic!("client {i} did not receive {expected}"),
            (Some(Value::String(expected)), Some(text)) => {
                assert_eq!(&text, expected, "client {i}")
            }
            (Some(expected), Some(text)) => {
                let got: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|err| panic!("client {i}: {text:?} is not JSON: {err}"));
                assert_eq!(&got, expected, "client {i}: {text:?}");
                assert_eq!(text, got.to_string(), "client {i}: compact JSON text");
            }
        }
    }
}

async fn publish(server: &Server, authorization: Option<&str>, body: Body) -> Reply {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(authorization) = authorization {
        headers.push(("authorization", authorization));
    }
    post(&server.http_url("/api/publish"), &headers, body).await
}

fn publish_body(room: &str, message: Value) -> Body {
    Body::from(
        serde_json::to_vec(&json!({
            "protocol": "lws-mirror-protocol",
            "room": room,
            "message": message,
        }))
        .unwrap(),
    )
}

const TOKEN: &str = "s3cr3t-T0ken";
const BEARER: &str = "Bearer s3cr3t-T0ken";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_exactly_the_members_of_one_room() {
    let server = Server::start(&[
        "--api-token",
        TOKEN,
        "--workers",
        "2",
        "--max-publish-body",
        "1KiB",
    ]);
    let mut news = Vec::new();
    for _ in 0..20 {
        news.push(join_mirror(&server, "news").await);
    }
    let mut sports = Vec::new();
    for _ in 0..3 {
        sports.push(join_mirror(&server, "sports").await);
    }

    let reply = publish(
        &server,
        Some(BEARER),
        publish_body("news", json!("breaking")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json(), json!({ "reached": 20 }));
    expect_all(&mut news, Some(&json!("breaking"))).await;
    expect_all(&mut sports, None).await;

    // A chunked body, and a message that is not a string: sent as its JSON text.
    let object = json!({ "headline": "rates cut", "priority": 1, "tags": ["economy", true] });
    let body = serde_json::to_vec(&json!({
        "protocol": "lws-mirror-protocol",
        "room": "news",
        "message": object,
    }))
    .unwrap();
    let pieces: Vec<Result<Bytes, io::Error>> = body
        .chunks(10)
        .map(|piece| Ok(Bytes::copy_from_slice(piece)))
        .collect();
    let reply = publish(
        &server,
        Some(BEARER),
        Body::wrap_stream(stream::iter(pieces)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json(), json!({ "reached": 20 }));
    expect_all(&mut news, Some(&object)).await;

    // The other room, by itself.
    let reply = publish(&server, Some(BEARER), publish_body("sports", json!("goal"))).await;
    assert_eq!(reply.json(), json!({ "reached": 3 }));
    expect_all(&mut sports, Some(&json!("goal"))).await;
    // A room nobody is in.
    let reply = publish(&server, Some(BEARER), publish_body("empty", json!("echo?"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json(), json!({ "reached": 0 }));

    expect_all(&mut news, None).await;
    expect_all(&mut sports, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refusals() {
    let server = Server::start(&["--api-token", TOKEN, "--max-publish-body", "1KiB"]);
    let mut news = vec![join_mirror(&server, "news").await];
    let good = || publish_body("news", json!("should not arrive"));

    // No token, a wrong one, another scheme.
    for authorization in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cr3t-T0ke"),
        Some("Bearer s3cr3t-T0kenX"),
        Some("Basic czNjcjN0LVQwa2Vu"),
        Some(TOKEN),
    ] {
        let reply = publish(&server, authorization, good()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{authorization:?}: {}",
            reply.text
        );
        assert_eq!(reply.header("www-authenticate"), "Bearer");
    }

    // Bad JSON: 400 with the parser's message.
    let reply = publish(
        &server,
        Some(BEARER),
        Body::from(r#"{"protocol": "lws-mirror-protocol", "room": "news", "#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(
        reply.text.contains("invalid JSON") && reply.text.contains("line 1 column"),
        "{}",
        reply.text
    );
    let reply = publish(
        &server,
        Some(BEARER),
        Body::from(r#"{"protocol": "lws-mirror-protocol", "room": "news"}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(reply.text.contains("message"), "{}", reply.text);

    // A protocol the server does not speak.
    let reply = publish(
        &server,
        Some(BEARER),
        Body::from(r#"{"protocol": "no-such-protocol", "room": "news", "message": "x"}"#),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(
        reply.text.contains("no-such-protocol") && reply.text.contains("lws-mirror-protocol"),
        "{}",
        reply.text
    );

    // Over --max-publish-body (1 KiB), sized and chunked.
    let big = publish_body("news", json!("x".repeat(2 * KIB)));
    let reply = publish(&server, Some(BEARER), big).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text
    );
    let body = serde_json::to_vec(&json!({
        "protocol": "lws-mirror-protocol",
        "room": "news",
        "message": "y".repeat(2 * KIB),
    }))
    .unwrap();
    let pieces: Vec<Result<Bytes, io::Error>> = body
        .chunks(300)
        .map(|piece| Ok(Bytes::copy_from_slice(piece)))
        .collect();
    let reply = publish(
        &server,
        Some(BEARER),
        Body::wrap_stream(stream::iter(pieces)),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text
    );

    // Other methods.
    let response = reqwest::Client::new()
        .get(server.http_url("/api/publish"))
        .header("authorization", BEARER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");

    // None of it reached the room.
    expect_all(&mut news, None).await;

    // No --api-token: the endpoint is off, whatever the request says.
    let off = Server::start(&[]);
    let reply = publish(&off, Some(BEARER), publish_body("news", json!("x"))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
    assert!(reply.text.contains("--api-token"), "{}", reply.text);
    // An empty token counts as none.
    let empty = Server::start(&["--api-token", ""]);
    let reply = publish(&empty, Some("Bearer "), publish_body("news", json!("x"))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text);
}

// ---------------------------------------------------------------------------------------------
// 5. Slow clients: head and body timeouts

/// Sends a request head one header line every 300 ms, never ending it, from the moment it is
/// called; returns when the server answered or after `give_up`, with the reply (if any), the
/// time from the first trickled line to the reply, and whether the connection was then closed
/// within 2 s.
fn slowloris(
    mut stream: TcpStream,
    give_up: Duration,
) -> (Option<RawReply>, Duration, Result<(), String>) {
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let writer = thread::spawn({
        let mut stream = stream.try_clone().unwrap();
        let done = done.clone();
        move || {
            let mut lines = 0;
            if stream
                .write_all(b"GET /index.html HTTP/1.1\r\nHost: test\r\n")
                .is_err()
            {
                return lines;
            }
            while !done.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(300));
                lines += 1;
                if write!(stream, "X-Trickle-{lines}: still coming\r\n").is_err() {
                    break;
                }
            }
            lines
        }
    });
    let reply = read_reply(&mut stream, started + give_up);
    let elapsed = started.elapsed();
    let closed = match &reply {
        Ok(_) => wait_for_close(&mut stream, Instant::now() + Duration::from_secs(2)),
        Err(err) => Err(format!("no reply: {err}")),
    };
    done.store(true, Ordering::Relaxed);
    let _ = stream.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();
    (reply.ok(), elapsed, closed)
}

#[test]
fn a_slowloris_head_gets_408_while_other_clients_are_served() {
    let _cpu = CPU.blocking_read();
    let server = Server::start(&["--head-timeout", "2", "--workers", "1"]);
    let addr = server.addr;
    let index_len = fs::metadata(support::project_static_dir().join("index.html"))
        .unwrap()
        .len() as usize;

    let slow = thread::spawn(move || slowloris(connect(addr), Duration::from_secs(6)));
    // A client that connects and sends nothing at all.
    let silent = thread::spawn(move || {
        let mut stream = connect(addr);
        let started = Instant::now();
        let reply = read_reply(&mut stream, started + Duration::from_secs(6));
        (reply.ok(), started.elapsed())
    });

    // Once the server has accepted both (its process holds their sockets)...
    let deadline = Instant::now() + IO_TIMEOUT;
    while support::ws_client::server_sockets(server.pid(), addr.port())
        .iter()
        .filter(|socket| socket.open)
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the server did not accept the slow clients within {IO_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    // ...meanwhile, on the same single worker: 20 ordinary GETs, each on a new connection.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let (reply, latency) = raw_get(addr, "/index.html");
        assert_eq!(reply.status, 200, "GET {i}");
        assert_eq!(reply.body.len(), index_len, "GET {i}");
        slowest = slowest.max(latency);
        thread::sleep(Duration::from_millis(50));
    }
    let served_in = started.elapsed();
    assert!(
        !slow.is_finished(),
        "the slowloris was answered before the other client was done ({served_in:?})"
    );

    let (reply, elapsed, closed) = slow.join().unwrap();
    let (silent_reply, silent_elapsed) = silent.join().unwrap();
    println!(
        "slowloris: 408 after {elapsed:?}; silent connection: 408 after {silent_elapsed:?}; \
         meanwhile 20 GETs in {served_in:?}, slowest {slowest:?}"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "a GET took {slowest:?} while the slowloris was active"
    );
    let reply = reply.expect("a reply to the slowloris");
    assert_eq!(reply.status, 408, "{reply:?}");
    assert!(
        elapsed >= Duration::from_millis(1800) && elapsed <= Duration::from_secs(4),
        "408 after {elapsed:?}, expected ~2 s"
    );
    closed.expect("connection closed after the 408");
    let silent_reply = silent_reply.expect("a reply to the silent connection");
    assert_eq!(silent_reply.status, 408, "{silent_reply:?}");
    assert!(
        silent_elapsed >= Duration::from_millis(1800) && silent_elapsed <= Duration::from_secs(4),
        "408 after {silent_elapsed:?}, expected ~2 s"
    );
}

#[test]
fn a_slowloris_second_request_on_a_keep_alive_connection_gets_408() {
    let _cpu = CPU.blocking_read();
    let server = Server::start(&["--head-timeout", "2", "--workers", "1"]);
    let mut stream = connect(server.addr);
    stream
        .write_all(b"GET /index.html HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let first = read_reply(&mut stream, Instant::now() + IO_TIMEOUT).expect("first reply");
    assert_eq!(first.status, 200);
    assert_ne!(first.header("connection"), Some("close"));

    let (reply, elapsed, closed) = slowloris(stream, Duration::from_secs(8));
    let reply = reply.unwrap_or_else(|| {
        panic!("no reply to a second request head trickled for {elapsed:?}: {closed:?}")
    });
    assert_eq!(reply.status, 408, "{reply:?}");
    assert!(
        elapsed <= Duration::from_secs(4),
        "408 after {elapsed:?}, expected ~2 s"
    );
    closed.expect("connection closed after the 408");
}

#[test]
fn a_stalled_upload_body_gets_408_and_leaves_no_file() {
    let _cpu = CPU.blocking_read();
    let dir = TempDir::new("stall");
    let server = Server::start(&["--upload-dir", dir.arg(), "--body-timeout", "2"]);

    for chunked in [false, true] {
        // A complete first part and the start of a second, then nothing more.
        let mut body = part_head("a", Some(b"done.txt"));
        body.extend_from_slice(&pattern(10 * KIB, 4));
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(&part_head("b", Some(b"stalled.bin")));
        body.extend_from_slice(&pattern(300 * KIB, 5));
        let mut stream = connect(server.addr);
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_owned()
        } else {
            format!("Content-Length: {}", body.len() + MIB)
        };
        write!(
            stream,
            "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Type: {}\r\n{framing}\r\n\r\n",
            multipart_content_type()
        )
        .unwrap();
        if chunked {
            stream.write_all(&chunk(&body)).unwrap();
        } else {
            stream.write_all(&body).unwrap();
        }
        let stalled_at = Instant::now();
        let during = wait_for_entries(
            dir.path(),
            &["done.txt", "stalled.bin"],
            Duration::from_secs(1),
        );
        assert_eq!(
            during,
            BTreeSet::from(["done.txt".to_owned(), "stalled.bin".to_owned()]),
            "chunked: {chunked}"
        );

        let reply = read_reply(&mut stream, stalled_at + Duration::from_secs(6))
            .unwrap_or_else(|err| panic!("chunked: {chunked}: no reply to a stalled body: {err}"));
        let elapsed = stalled_at.elapsed();
        println!("stalled upload (chunked: {chunked}): 408 after {elapsed:?}");
        assert_eq!(reply.status, 408, "chunked: {chunked}: {reply:?}");
        assert!(
            elapsed >= Duration::from_millis(1800) && elapsed <= Duration::from_secs(4),
            "chunked: {chunked}: 408 after {elapsed:?}, expected ~2 s"
        );
        if !chunked {
            // For a chunked body, see `a_refused_chunked_body_ends_the_connection`.
            assert_eq!(reply.header("connection"), Some("close"));
            wait_for_close(&mut stream, Instant::now() + Duration::from_secs(2))
                .expect("connection closed after the 408");
        }
        let after = wait_for_entries(dir.path(), &[], Duration::from_secs(2));
        assert!(
            after.is_empty(),
            "chunked: {chunked}: left behind: {after:?}"
        );
    }
}

#[test]
fn a_refused_chunked_body_ends_the_connection() {
    let _cpu = CPU.blocking_read();
    let dir = TempDir::new("chunked-close");
    let server = Server::start(&[
        "--upload-dir",
        dir.arg(),
        "--max-upload",
        "64KiB",
        "--body-timeout",
        "2",
    ]);
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Type: {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        multipart_content_type()
    );
    let mut body = part_head("f", Some(b"f.bin"));
    body.extend_from_slice(&pattern(16 * KIB, 6));

    // Over the limit: 413, then the server must stop reading and end the connection (the
    // client keeps sending, as a client that does not read its replies would).
    let mut stream = connect(server.addr);
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&chunk(&body)).unwrap();
    let filler = chunk(&pattern(64 * KIB, 7));
    stream.write_all(&filler).unwrap();
    let reply = read_reply(&mut stream, Instant::now() + IO_TIMEOUT).expect("reply");
    assert_eq!(reply.status, 413, "{reply:?}");
    // The server may read and discard for a short, bounded while (as nginx's lingering close
    // does, so that a client still sending can read the 413 rather than a reset), then it must
    // end the connection however much the client keeps sending.
    let keep_sending = Instant::now();
    let mut ended = false;
    while keep_sending.elapsed() < Duration::from_secs(5) {
        if stream.write_all(&filler).is_err() {
            ended = true;
            break;
        }
    }
    let after = keep_sending.elapsed();
    assert!(
        ended,
        "the connection was still taking the refused body {after:?} after the 413"
    );
    assert!(after < Duration::from_secs(3), "ended only after {after:?}");
    assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");

    // Stalled: 408, then the connection ends.
    let mut stream = connect(server.addr);
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&chunk(&body[..KIB])).unwrap();
    let reply = read_reply(&mut stream, Instant::now() + IO_TIMEOUT).expect("reply");
    assert_eq!(reply.status, 408, "{reply:?}");
    assert_eq!(reply.header("connection"), Some("close"), "{reply:?}");
    wait_for_close(&mut stream, Instant::now() + Duration::from_secs(5))
        .expect("connection closed within 5 s of the 408");
}

#[test]
fn a_stalled_publish_body_gets_408() {
    let _cpu = CPU.blocking_read();
    let server = Server::start(&["--api-token", TOKEN, "--body-timeout", "2"]);
    let mut stream = connect(server.addr);
    write!(
        stream,
        "POST /api/publish HTTP/1.1\r\nHost: test\r\nAuthorization: {BEARER}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"protocol\": "
    )
    .unwrap();
    let started = Instant::now();
    let reply = read_reply(&mut stream, started + Duration::from_secs(6)).expect("reply");
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 408, "{reply:?}");
    assert!(
        elapsed >= Duration::from_millis(1800) && elapsed <= Duration::from_secs(4),
        "408 after {elapsed:?}, expected ~2 s"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. The front door

/// Sends `head` (written from another thread, so that a server that stops reading cannot block
/// the test) and reads the reply.
fn send_head(addr: SocketAddr, head: Vec<u8>) -> (io::Result<RawReply>, TcpStream) {
    let mut stream = connect(addr);
    let writer = thread::spawn({
        let mut stream = stream.try_clone().unwrap();
        move || {
            let _ = stream.write_all(&head);
        }
    });
    let reply = read_reply(&mut stream, Instant::now() + IO_TIMEOUT);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    writer.join().unwrap();
    (reply, stream)
}

/// A GET whose head is about `size` bytes, most of it in one header.
fn head_of_size(size: usize) -> Vec<u8> {
    let start = "GET /index.html HTTP/1.1\r\nHost: test\r\nX-Filler: ";
    let end = "\r\nConnection: close\r\n\r\n";
    let filler = "f".repeat(size - start.len() - end.len());
    format!("{start}{filler}{end}").into_bytes()
}

#[test]
fn request_heads_over_the_limits_get_431() {
    let server = Server::start(&["--max-head", "4KiB"]);
    let (reply, _) = send_head(server.addr, head_of_size(3 * KIB));
    assert_eq!(reply.expect("reply").status, 200);
    let (reply, _) = send_head(server.addr, head_of_size(6 * KIB));
    let reply = reply.expect("reply");
    assert_eq!(reply.status, 431, "{reply:?}");
    assert!(
        String::from_utf8_lossy(&reply.body).contains("4096"),
        "{reply:?}"
    );
    // Over actix-http's own 128 KiB buffer.
    for size in [130 * KIB, 300 * KIB] {
        let (reply, _) = send_head(server.addr, head_of_size(size));
        let reply = reply.unwrap_or_else(|err| panic!("{size}-byte head: no reply: {err}"));
        assert_eq!(reply.status, 431, "{size}-byte head: {reply:?}");
    }

    // With a larger --max-head, actix-http's buffer is the limit.
    let server = Server::start(&["--max-head", "1MiB"]);
    let (reply, _) = send_head(server.addr, head_of_size(100 * KIB));
    assert_eq!(reply.expect("reply").status, 200);
    let (reply, _) = send_head(server.addr, head_of_size(200 * KIB));
    assert_eq!(reply.expect("reply").status, 431);
}

#[test]
fn malformed_requests_get_400_and_unknown_methods_405() {
    let server = Server::start(&[]);
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /index.html HTTP/9.9\r\n\r\n",
        b"GET /index.html HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
    ] {
        let (reply, mut stream) = send_head(server.addr, garbage.to_vec());
        let reply =
            reply.unwrap_or_else(|err| panic!("{:?}: no reply: {err}", garbage.escape_ascii()));
        assert_eq!(reply.status, 400, "{:?}: {reply:?}", garbage.escape_ascii());
        wait_for_close(&mut stream, Instant::now() + Duration::from_secs(5))
            .expect("connection closed after the 400");
    }

    let (reply, _) = send_head(
        server.addr,
        b"FOO /index.html HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".to_vec(),
    );
    let reply = reply.expect("reply");
    assert_eq!(reply.status, 405, "{reply:?}");
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_keep_alive() {
    let _cpu = CPU.blocking_read();
    let server = Server::start(&["--keep-alive", "1"]);
    let mut stream = connect(server.addr);
    // Two requests on the connection, then silence.
    for _ in 0..2 {
        stream
            .write_all(b"GET /index.html HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        let reply = read_reply(&mut stream, Instant::now() + IO_TIMEOUT).expect("reply");
        assert_eq!(reply.status, 200);
        assert_ne!(reply.header("connection"), Some("close"));
    }
    let idle_from = Instant::now();
    wait_for_close(&mut stream, idle_from + Duration::from_secs(3))
        .expect("the idle connection closed within 3 s");
    let idle = idle_from.elapsed();
    println!("keep-alive 1 s: closed after {idle:?} idle");
    assert!(
        idle >= Duration::from_millis(800),
        "closed after only {idle:?}"
    );
}
