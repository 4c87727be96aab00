//! The static file server, end to end: the real binary serving a temporary directory, asked over
//! real sockets. `reqwest` for ordinary requests; raw HTTP/1.1 over `TcpStream` for paths that a
//! URL library would normalize (`..`, `%2e%2e`) before they reach the server.

mod support;

use std::{
    fs::{self, File},
    io::Write,
    net::SocketAddr,
    ops::Range,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use reqwest::{header, Method, StatusCode};
use support::{
    raw_http::{self, RawReply},
    Server, TempDir,
};

const DATA_LEN: u64 = 10_000;
const CACHE_CONTROL: &str = "public, max-age=123";
/// Only in the file outside the static directory: if a response ever contains it, a request
/// escaped.
const SECRET: &str = "TOP-SECRET-OUTSIDE-THE-STATIC-DIR";

// ---------------------------------------------------------------------------------------------
// Fixtures

/// The byte at offset `i` of every generated file: varies with period much longer than any
/// range, so a misplaced slice cannot compare equal by accident.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(i / 7)) as u8
}

fn pattern_bytes(range: Range<u64>) -> Vec<u8> {
    range.map(pattern).collect()
}

/// Writes `range` of the pattern at its own offset, 1 MiB at a time.
fn write_pattern(file: &File, range: Range<u64>) {
    const STEP: u64 = 1 << 20;
    let mut offset = range.start;
    while offset < range.end {
        let end = (offset + STEP).min(range.end);
        file.write_all_at(&pattern_bytes(offset..end), offset)
            .unwrap();
        offset = end;
    }
}

/// The mtime given to every fixture file: an hour ago, so that Last-Modified is a strong
/// validator (If-Range by date) and predictable.
fn fixture_mtime() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn write_file(path: &Path, contents: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    let file = File::create(path).unwrap();
    (&file).write_all(contents).unwrap();
    file.set_modified(fixture_mtime()).unwrap();
}

/// A server on a fresh static directory:
///
/// ```text
/// <tmp>/static/data.bin          10 000 pattern bytes
/// <tmp>/static/hello.txt, page.html (2.4 KB), style.css, image.png, empty.txt, small.txt (1 KiB)
/// <tmp>/static/index.html, sub/index.html, noindex/file.txt
/// <tmp>/static/.hidden, .git/config, sub/.env
/// <tmp>/static/alias.txt   -> hello.txt            (inside: allowed)
/// <tmp>/static/escape.txt  -> ../outside/secret.txt (outside: refused)
/// <tmp>/static/escape_dir  -> ../outside            (outside: refused)
/// <tmp>/static/passwd      -> /etc/passwd           (outside: refused)
/// <tmp>/static/peek.txt    -> .hidden               (hidden once resolved: refused)
/// <tmp>/outside/secret.txt
/// ```
struct Fixture {
    server: Server,
    client: reqwest::Client,
    static_dir: PathBuf,
    _tmp: TempDir,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let tmp = TempDir::new(name);
        let static_dir = tmp.path().join("static");
        let outside = tmp.path().join("outside");
        write_file(&outside.join("secret.txt"), SECRET.as_bytes());
        write_file(&static_dir.join("data.bin"), &pattern_bytes(0..DATA_LEN));
        write_file(&static_dir.join("hello.txt"), b"hello, world\n");
        let page = format!(
            "<!doctype html><title>p</title>{}",
            "<p>text</p>\n".repeat(200)
        );
        write_file(&static_dir.join("page.html"), page.as_bytes());
        write_file(&static_dir.join("style.css"), b"body { color: red }");
        write_file(&static_dir.join("image.png"), b"\x89PNG\r\n\x1a\n");
        write_file(&static_dir.join("empty.txt"), b"");
        write_file(&static_dir.join("small.txt"), &[b'x'; 1024]);
        write_file(&static_dir.join("index.html"), b"<h1>root index</h1>");
        write_file(&static_dir.join("sub/index.html"), b"<h1>sub index</h1>");
        write_file(&static_dir.join("noindex/file.txt"), b"file");
        write_file(&static_dir.join(".hidden"), SECRET.as_bytes());
        write_file(&static_dir.join(".git/config"), SECRET.as_bytes());
        write_file(&static_dir.join("sub/.env"), SECRET.as_bytes());
        let link = |target: &str, name: &str| {
            std::os::unix::fs::symlink(target, static_dir.join(name)).unwrap()
        };
        link("hello.txt", "alias.txt");
        link("../outside/secret.txt", "escape.txt");
        link("../outside", "escape_dir");
        link("/etc/passwd", "passwd");
        link(".hidden", "peek.txt");
        Fixture::serve(tmp, static_dir)
    }

    fn serve(tmp: TempDir, static_dir: PathBuf) -> Fixture {
        let server = Server::start_with(&[
            "--static-dir",
            static_dir.to_str().unwrap(),
            "--cache-control",
            CACHE_CONTROL,
        ]);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(300))
            .build()
            .unwrap();
        Fixture {
            server,
            client,
            static_dir,
            _tmp: tmp,
        }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.client.request(method, self.server.http_url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        self.request(Method::GET, path, headers).await
    }

    /// GET with a Range header; returns the response with its body read.
    async fn get_range(&self, path: &str, range: &str) -> Reply {
        Reply::read(self.get(path, &[("Range", range)]).await).await
    }
}

/// A response with its body read.
struct Reply {
    status: StatusCode,
    headers: header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    async fn read(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap().to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> &str {
        header_value(&self.headers, name)
    }

    /// Content-Length as sent must equal the body received.
    fn assert_exact_length(&self) {
        assert_eq!(
            self.header("content-length").parse::<usize>().unwrap(),
            self.body.len()
        );
        assert!(self.headers.get("transfer-encoding").is_none());
    }
}

fn header_value<'h>(headers: &'h header::HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// multipart/byteranges

#[derive(Debug)]
struct Part {
    content_type: String,
    range: Range<u64>,
    total: u64,
    data: Vec<u8>,
}

/// `bytes a-b/len` → (a..b+1, len).
fn parse_content_range(value: &str) -> (Range<u64>, u64) {
    let rest = value.strip_prefix("bytes ").expect("bytes unit");
    let (span, total) = rest.split_once('/').unwrap();
    let (first, last) = span.split_once('-').unwrap();
    let first: u64 = first.parse().unwrap();
    let last: u64 = last.parse().unwrap();
    assert!(first <= last, "{value}");
    (first..last + 1, total.parse().unwrap())
}

/// Splits a multipart/byteranges body into its parts, checking the framing strictly: the
/// boundary from the Content-Type, each part's own headers, then exactly as many bytes as its
/// Content-Range says, then the next delimiter or the closing one and nothing after it.
fn parse_multipart(content_type: &str, body: &[u8]) -> Vec<Part> {
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("not multipart/byteranges: {content_type}"));
    let delimiter = format!("--{boundary}");
    let mut rest = body
        .strip_prefix(delimiter.as_bytes())
        .expect("body starts with the delimiter");
    let mut parts = Vec::new();
    loop {
        if rest == b"--\r\n" {
            return parts;
        }
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after delimiter");
        let header_end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of part headers");
        let headers = std::str::from_utf8(&rest[..header_end]).unwrap();
        rest = &rest[header_end + 4..];
        let mut content_type = None;
        let mut content_range = None;
        for line in headers.split("\r\n") {
            let (name, value) = line.split_once(": ").expect("header line");
            match name.to_ascii_lowercase().as_str() {
                "content-type" => content_type = Some(value.to_owned()),
                "content-range" => content_range = Some(parse_content_range(value)),
                other => panic!("unexpected part header {other}"),
            }
        }
        let (range, total) = content_range.expect("part has Content-Range");
        let len = (range.end - range.start) as usize;
        let data = rest[..len].to_vec();
        rest = rest[len..]
            .strip_prefix(b"\r\n")
            .and_then(|r| r.strip_prefix(delimiter.as_bytes()))
            .expect("delimiter after part data");
        parts.push(Part {
            content_type: content_type.expect("part has Content-Type"),
            range,
            total,
            data,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1, for paths no URL library would send as they are

/// Sends one request with `Connection: close` and reads the whole answer.
fn raw_request(addr: SocketAddr, method: &str, target: &[u8]) -> RawReply {
    let mut stream = raw_http::connect(addr, Duration::from_secs(10));
    let mut request = format!("{method} ").into_bytes();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(&request).unwrap();
    raw_http::read_reply_to(
        method,
        &mut stream,
        Instant::now() + Duration::from_secs(10),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Plain GET: types and validators

#[tokio::test(flavor = "multi_thread")]
async fn files_carry_type_validators_and_cache_headers() {
    let f = Fixture::new("headers");
    let reply = Reply::read(f.get("/hello.txt", &[]).await).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, b"hello, world\n");
    reply.assert_exact_length();
    assert_eq!(reply.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(reply.header("accept-ranges"), "bytes");
    assert_eq!(reply.header("cache-control"), CACHE_CONTROL);
    assert_eq!(
        httpdate::parse_http_date(reply.header("last-modified")).unwrap(),
        fixture_mtime()
    );
    // A strong ETag: "<hex size>-<hex mtime ns>".
    let etag = reply.header("etag");
    let inner = etag
        .strip_prefix('"')
        .and_then(|e| e.strip_suffix('"'))
        .unwrap_or_else(|| panic!("strong quoted etag: {etag}"));
    let (size, mtime) = inner.split_once('-').unwrap();
    assert_eq!(u64::from_str_radix(size, 16).unwrap(), 13);
    let mtime_ns = u128::from_str_radix(mtime, 16).unwrap();
    let expected_ns = fixture_mtime()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    assert_eq!(mtime_ns, expected_ns);

    // A new version gets a new ETag.
    write_file(&f.static_dir.join("hello.txt"), b"hello, again\n!");
    let changed = f.get("/hello.txt", &[]).await;
    assert_ne!(header_value(changed.headers(), "etag"), etag);

    for (path, content_type) in [
        ("/page.html", "text/html; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/image.png", "image/png"),
        ("/data.bin", "application/octet-stream"),
        // A symlink inside the directory is fine, and typed by the name asked for.
        ("/alias.txt", "text/plain; charset=utf-8"),
    ] {
        let reply = Reply::read(f.get(path, &[]).await).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.header("content-type"), content_type, "{path}");
        reply.assert_exact_length();
    }
    let data = Reply::read(f.get("/data.bin", &[]).await).await;
    assert_eq!(data.body, pattern_bytes(0..DATA_LEN));

    let empty = Reply::read(f.get("/empty.txt", &[]).await).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.header("content-length"), "0");
    assert!(empty.body.is_empty());

    let missing = f.get("/missing.txt", &[]).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn directories_serve_their_index_and_redirect_to_the_slash_form() {
    let f = Fixture::new("dirs");
    let root = Reply::read(f.get("/", &[]).await).await;
    assert_eq!(root.status, StatusCode::OK);
    assert_eq!(root.body, b"<h1>root index</h1>");
    assert_eq!(root.header("content-type"), "text/html; charset=utf-8");

    let sub = Reply::read(f.get("/sub/", &[]).await).await;
    assert_eq!(sub.status, StatusCode::OK);
    assert_eq!(sub.body, b"<h1>sub index</h1>");
    assert_eq!(sub.header("content-type"), "text/html; charset=utf-8");
    assert!(sub.headers.contains_key("etag"));

    // Without the slash: 301 to the slash form (relative links in the index then work), with
    // the query kept.
    let redirect = f.get("/sub", &[]).await;
    assert_eq!(redirect.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(header_value(redirect.headers(), "location"), "/sub/");
    let redirect = f.get("/sub?x=1", &[]).await;
    assert_eq!(header_value(redirect.headers(), "location"), "/sub/?x=1");
    // The Location is rebuilt from the decoded path, so it never starts with `//`.
    let raw = raw_request(f.server.addr, "GET", b"//sub");
    assert_eq!(raw.status, 301);
    assert_eq!(raw.header("location"), Some("/sub/"));

    // A directory without index.html is not listed; a file asked for as a directory is absent.
    assert_eq!(
        f.get("/noindex/", &[]).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        f.get("/hello.txt/", &[]).await.status(),
        StatusCode::NOT_FOUND
    );
}

// ---------------------------------------------------------------------------------------------
// Conditional requests

#[tokio::test(flavor = "multi_thread")]
async fn if_none_match_answers_304() {
    let f = Fixture::new("inm");
    let first = f.get("/data.bin", &[]).await;
    let etag = header_value(first.headers(), "etag").to_owned();
    let last_modified = header_value(first.headers(), "last-modified").to_owned();

    let weak = format!("W/{etag}");
    let list = format!("\"other\", {etag}");
    for value in [etag.as_str(), weak.as_str(), list.as_str(), "*"] {
        let reply = Reply::read(f.get("/data.bin", &[("If-None-Match", value)]).await).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_MODIFIED,
            "If-None-Match: {value}"
        );
        assert!(reply.body.is_empty());
        assert_eq!(reply.header("etag"), etag);
        assert_eq!(reply.header("last-modified"), last_modified);
        assert_eq!(reply.header("cache-control"), CACHE_CONTROL);
    }
    // HEAD too; and a 304 wins over a Range.
    let head = f
        .request(Method::HEAD, "/data.bin", &[("If-None-Match", &etag)])
        .await;
    assert_eq!(head.status(), StatusCode::NOT_MODIFIED);
    let ranged = f
        .get(
            "/data.bin",
            &[("If-None-Match", &etag), ("Range", "bytes=0-9")],
        )
        .await;
    assert_eq!(ranged.status(), StatusCode::NOT_MODIFIED);

    // Another version's tag: the file.
    let stale = Reply::read(f.get("/data.bin", &[("If-None-Match", "\"1-2\"")]).await).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.body.len() as u64, DATA_LEN);
}

#[tokio::test(flavor = "multi_thread")]
async fn if_modified_since_answers_304_when_if_none_match_is_absent() {
    let f = Fixture::new("ims");
    let first = f.get("/hello.txt", &[]).await;
    let last_modified = header_value(first.headers(), "last-modified").to_owned();
    let later = httpdate::fmt_http_date(fixture_mtime() + Duration::from_secs(60));
    let earlier = httpdate::fmt_http_date(fixture_mtime() - Duration::from_secs(60));

    for since in [&last_modified, &later] {
        let reply = Reply::read(f.get("/hello.txt", &[("If-Modified-Since", since)]).await).await;
        assert_eq!(reply.status, StatusCode::NOT_MODIFIED, "since {since}");
        assert!(reply.body.is_empty());
        assert_eq!(reply.header("last-modified"), last_modified);
        assert_eq!(reply.header("cache-control"), CACHE_CONTROL);
        assert!(reply.headers.contains_key("etag"));
    }
    let modified = f
        .get("/hello.txt", &[("If-Modified-Since", &earlier)])
        .await;
    assert_eq!(modified.status(), StatusCode::OK);
    // Unparseable dates are ignored.
    for garbage in ["yesterday", "Mon, 99 Foo 2020 00:00:00 GMT", ""] {
        let reply = f.get("/hello.txt", &[("If-Modified-Since", garbage)]).await;
        assert_eq!(reply.status(), StatusCode::OK, "{garbage:?}");
    }
    // If-None-Match present: If-Modified-Since is not consulted.
    let both = f
        .get(
            "/hello.txt",
            &[
                ("If-None-Match", "\"stale\""),
                ("If-Modified-Since", &later),
            ],
        )
        .await;
    assert_eq!(both.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn if_match_and_if_unmodified_since_answer_412_before_any_other_rule() {
    let f = Fixture::new("preconditions");
    let first = f.get("/data.bin", &[]).await;
    let etag = header_value(first.headers(), "etag").to_owned();
    let last_modified = header_value(first.headers(), "last-modified").to_owned();
    let earlier = httpdate::fmt_http_date(fixture_mtime() - Duration::from_secs(60));

    // The current version: served as usual, ranges included.
    let list = format!("\"other\", {etag}");
    for value in [etag.as_str(), list.as_str(), "*"] {
        let ranged = Reply::read(
            f.get("/data.bin", &[("If-Match", value), ("Range", "bytes=0-9")])
                .await,
        )
        .await;
        assert_eq!(
            ranged.status,
            StatusCode::PARTIAL_CONTENT,
            "If-Match: {value}"
        );
        assert_eq!(ranged.body.len(), 10);
    }
    let unchanged = f
        .get("/data.bin", &[("If-Unmodified-Since", &last_modified)])
        .await;
    assert_eq!(unchanged.status(), StatusCode::OK);

    // Another version, a weak tag (If-Match compares strongly), or a file changed since the
    // date: 412, on GET, HEAD and ranges alike, with the current validators.
    let weak = format!("W/{etag}");
    for (name, value) in [
        ("If-Match", "\"1-2\""),
        ("If-Match", weak.as_str()),
        ("If-Unmodified-Since", earlier.as_str()),
    ] {
        for (method, range) in [
            (Method::GET, None),
            (Method::HEAD, None),
            (Method::GET, Some("bytes=0-9")),
        ] {
            let mut headers = vec![(name, value)];
            headers.extend(range.map(|range| ("Range", range)));
            let reply = Reply::read(f.request(method.clone(), "/data.bin", &headers).await).await;
            assert_eq!(
                reply.status,
                StatusCode::PRECONDITION_FAILED,
                "{method} {name}: {value} {range:?}"
            );
            assert_eq!(reply.header("etag"), etag);
            if method == Method::GET {
                assert!(String::from_utf8_lossy(&reply.body).contains("precondition failed"));
            }
        }
    }

    // RFC 9110 §13.2.2: If-Match decides over If-Unmodified-Since, and both come before
    // If-None-Match (a 412 wins over a 304).
    let matching_tag = f
        .get(
            "/data.bin",
            &[("If-Match", &etag), ("If-Unmodified-Since", &earlier)],
        )
        .await;
    assert_eq!(matching_tag.status(), StatusCode::OK);
    let failed_first = f
        .get(
            "/data.bin",
            &[("If-Match", "\"1-2\""), ("If-None-Match", &etag)],
        )
        .await;
    assert_eq!(failed_first.status(), StatusCode::PRECONDITION_FAILED);
    // A date that is not a date is ignored.
    let garbage = f
        .get("/data.bin", &[("If-Unmodified-Since", "yesterday")])
        .await;
    assert_eq!(garbage.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Ranges

#[tokio::test(flavor = "multi_thread")]
async fn single_ranges_return_exactly_the_slice() {
    let f = Fixture::new("single");
    for (range, expected) in [
        ("bytes=64-95", 64..96),
        ("bytes=0-0", 0..1),
        ("bytes=-500", 9500..10_000),
        ("bytes=9500-", 9500..10_000),
        // Past the end: clamped.
        ("bytes=9990-20000", 9990..10_000),
        ("bytes=-20000", 0..10_000),
        // One satisfiable range among unsatisfiable ones.
        ("bytes=20000-30000,5-9", 5..10),
    ] {
        let reply = f.get_range("/data.bin", range).await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            reply.header("content-range"),
            format!("bytes {}-{}/{DATA_LEN}", expected.start, expected.end - 1),
            "{range}"
        );
        assert_eq!(reply.header("content-type"), "application/octet-stream");
        assert_eq!(reply.body, pattern_bytes(expected), "{range}");
        reply.assert_exact_length();
        assert!(reply.headers.contains_key("etag"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn several_ranges_are_multipart_byteranges() {
    let f = Fixture::new("multi");
    let reply = f.get_range("/data.bin", "bytes=64-95,128-143,9000-").await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert!(reply.headers.get("content-range").is_none());
    reply.assert_exact_length();
    let parts = parse_multipart(reply.header("content-type"), &reply.body);
    let ranges: Vec<Range<u64>> = parts.iter().map(|p| p.range.clone()).collect();
    assert_eq!(ranges, [64..96, 128..144, 9000..10_000]);
    for part in &parts {
        assert_eq!(part.content_type, "application/octet-stream");
        assert_eq!(part.total, DATA_LEN);
        assert_eq!(part.data, pattern_bytes(part.range.clone()));
    }

    // Parts come in the order the ranges were asked for; each part is typed like the file.
    let reply = f.get_range("/page.html", "bytes=20-25,0-4").await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    let parts = parse_multipart(reply.header("content-type"), &reply.body);
    assert_eq!(parts[0].range, 20..26);
    assert_eq!(parts[1].range, 0..5);
    assert_eq!(parts[1].data, b"<!doc");
    assert!(parts
        .iter()
        .all(|p| p.content_type == "text/html; charset=utf-8"));
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_and_adjacent_ranges_are_coalesced() {
    let f = Fixture::new("coalesce");
    let reply = f
        .get_range("/data.bin", "bytes=1000-1099,0-99,50-149,150-199")
        .await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    reply.assert_exact_length();
    let parts = parse_multipart(reply.header("content-type"), &reply.body);
    let ranges: Vec<Range<u64>> = parts.iter().map(|p| p.range.clone()).collect();
    assert_eq!(ranges, [1000..1100, 0..200]);
    for part in &parts {
        assert_eq!(part.data, pattern_bytes(part.range.clone()));
    }

    // Coalesced into one: a plain single-part 206.
    let reply = f.get_range("/data.bin", "bytes=0-99,10-20,100-199").await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.header("content-type"), "application/octet-stream");
    assert_eq!(reply.header("content-range"), "bytes 0-199/10000");
    assert_eq!(reply.body, pattern_bytes(0..200));

    // The same range many times does not multiply the response.
    let repeated = format!("bytes={}", vec!["0-"; 200].join(","));
    let reply = f.get_range("/data.bin", &repeated).await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.header("content-range"), "bytes 0-9999/10000");
    assert_eq!(reply.body.len() as u64, DATA_LEN);
}

#[tokio::test(flavor = "multi_thread")]
async fn abusive_range_lists_get_the_whole_file() {
    let f = Fixture::new("abuse");
    let disjoint = |count: u64| {
        let list: Vec<String> = (0..count).map(|i| format!("{0}-{0}", i * 100)).collect();
        format!("bytes={}", list.join(","))
    };
    // 64 parts is the limit ...
    let reply = f.get_range("/data.bin", &disjoint(64)).await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    let parts = parse_multipart(reply.header("content-type"), &reply.body);
    assert_eq!(parts.len(), 64);
    assert!(parts
        .iter()
        .all(|p| p.data == pattern_bytes(p.range.clone())));
    // ... one more and the Range header is ignored: 200 with the whole file.
    let reply = f.get_range("/data.bin", &disjoint(65)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers.get("content-range").is_none());
    assert_eq!(reply.body, pattern_bytes(0..DATA_LEN));

    // Many small ranges whose multipart framing would outweigh the file: the whole file.
    let list: Vec<String> = (0..20).map(|i| format!("{0}-{0}", i * 50)).collect();
    let reply = f
        .get_range("/small.txt", &format!("bytes={}", list.join(",")))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, vec![b'x'; 1024]);

    // More than 1024 range specs are not even coalesced.
    let long = format!("bytes={}", vec!["0-0"; 1025].join(","));
    let reply = f.get_range("/data.bin", &long).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len() as u64, DATA_LEN);
}

#[tokio::test(flavor = "multi_thread")]
async fn unsatisfiable_ranges_get_416_with_the_length() {
    let f = Fixture::new("416");
    for range in [
        "bytes=10000-",
        "bytes=10000-10005",
        "bytes=20000-,10001-10002",
        "bytes=-0",
    ] {
        let reply = f.get_range("/data.bin", range).await;
        assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(reply.header("content-range"), "bytes */10000", "{range}");
        reply.assert_exact_length();
    }
    for range in ["bytes=0-0", "bytes=-5", "bytes=0-"] {
        let reply = f.get_range("/empty.txt", range).await;
        assert_eq!(reply.status, StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(reply.header("content-range"), "bytes */0");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_ranges_are_ignored() {
    let f = Fixture::new("malformed");
    for range in [
        "bytes",
        "bytes=",
        "bytes=abc",
        "bytes=500-100",
        "bytes=0-10,500-100",
        "bytes=-",
        "bytes=1-2-3",
        "bytes=0x10-0x20",
        "items=0-10",
        "0-10",
    ] {
        let reply = f.get_range("/data.bin", range).await;
        assert_eq!(reply.status, StatusCode::OK, "{range}");
        assert!(reply.headers.get("content-range").is_none());
        assert_eq!(reply.body, pattern_bytes(0..DATA_LEN), "{range}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn if_range_honours_ranges_only_for_the_current_version() {
    let f = Fixture::new("ifrange");
    let first = f.get("/data.bin", &[]).await;
    let etag = header_value(first.headers(), "etag").to_owned();
    let last_modified = header_value(first.headers(), "last-modified").to_owned();
    let with = |if_range: &str| {
        let if_range = if_range.to_owned();
        let f = &f;
        async move {
            Reply::read(
                f.get(
                    "/data.bin",
                    &[("Range", "bytes=100-199"), ("If-Range", &if_range)],
                )
                .await,
            )
            .await
        }
    };

    for current in [etag.as_str(), last_modified.as_str()] {
        let reply = with(current).await;
        assert_eq!(
            reply.status,
            StatusCode::PARTIAL_CONTENT,
            "If-Range {current}"
        );
        assert_eq!(reply.body, pattern_bytes(100..200));
    }
    let weak = format!("W/{etag}");
    let other_date = httpdate::fmt_http_date(fixture_mtime() - Duration::from_secs(5));
    for stale in ["\"1-2\"", weak.as_str(), other_date.as_str(), "not a date"] {
        let reply = with(stale).await;
        assert_eq!(reply.status, StatusCode::OK, "If-Range {stale}");
        assert_eq!(reply.body, pattern_bytes(0..DATA_LEN));
    }

    // After a change the old tag is stale too.
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(f.static_dir.join("data.bin"))
        .unwrap();
    file.write_all(b"more").unwrap();
    drop(file);
    let reply = with(&etag).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len() as u64, DATA_LEN + 4);
}

// ---------------------------------------------------------------------------------------------
// HEAD and other methods

#[tokio::test(flavor = "multi_thread")]
async fn head_has_the_get_headers_and_no_body() {
    let f = Fixture::new("head");
    let get = f.get("/data.bin", &[]).await;
    let head = f.request(Method::HEAD, "/data.bin", &[]).await;
    assert_eq!(head.status(), StatusCode::OK);
    for name in [
        "content-length",
        "content-type",
        "etag",
        "last-modified",
        "cache-control",
        "accept-ranges",
    ] {
        assert_eq!(
            header_value(head.headers(), name),
            header_value(get.headers(), name),
            "{name}"
        );
    }
    assert_eq!(header_value(head.headers(), "content-length"), "10000");

    // Over a raw socket: the response ends right after the head.
    let raw = raw_request(f.server.addr, "HEAD", b"/data.bin");
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("content-length"), Some("10000"));
    assert!(
        raw.body.is_empty(),
        "HEAD sent {} body bytes",
        raw.body.len()
    );

    // Range is for GET only: HEAD with a Range describes the whole file.
    let ranged = f
        .request(Method::HEAD, "/data.bin", &[("Range", "bytes=0-9")])
        .await;
    assert_eq!(ranged.status(), StatusCode::OK);
    assert_eq!(header_value(ranged.headers(), "content-length"), "10000");
    assert!(ranged.headers().get("content-range").is_none());

    let sub = raw_request(f.server.addr, "HEAD", b"/sub/");
    assert_eq!(sub.status, 200);
    assert_eq!(sub.header("content-length"), Some("18"));
    assert!(sub.body.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn other_methods_get_405_with_allow() {
    let f = Fixture::new("405");
    for method in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ] {
        let reply = f.request(method.clone(), "/hello.txt", &[]).await;
        assert_eq!(reply.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(header_value(reply.headers(), "allow"), "GET, HEAD");
    }
}

// ---------------------------------------------------------------------------------------------
// Paths that try to leave the static directory

#[test]
fn traversal_and_hidden_paths_are_refused() {
    let f = Fixture::new("traversal");
    let cases: &[(&[u8], u16)] = &[
        (b"/../outside/secret.txt", 404),
        (b"/sub/../../outside/secret.txt", 404),
        (b"/%2e%2e/outside/secret.txt", 404),
        (b"/%2E%2E/outside/secret.txt", 404),
        (b"/.%2e/outside/secret.txt", 404),
        (b"/%2e./outside/secret.txt", 404),
        (b"/..%2foutside%2fsecret.txt", 400),
        (b"/sub%2f..%2f..%2foutside%2fsecret.txt", 400),
        (b"/%2f..%2foutside/secret.txt", 400),
        (b"/..\\outside\\secret.txt", 400),
        (b"/..%5coutside%5csecret.txt", 400),
        (b"/hello.txt%00.png", 400),
        (b"/%00", 400),
        (b"/%zz", 400),
        (b"/%2", 400),
        (b"/%ff%fe", 400),
        (b"//etc/passwd", 404),
        (b"///etc/passwd", 404),
        (b"/escape.txt", 404),
        (b"/escape_dir/secret.txt", 404),
        (b"/passwd", 404),
        (b"/peek.txt", 404),
        (b"/.hidden", 404),
        (b"/%2ehidden", 404),
        (b"/.git/config", 404),
        (b"/sub/.env", 404),
        (b"/./hello.txt", 404),
    ];
    for (target, expected) in cases {
        let shown = String::from_utf8_lossy(target);
        let reply = raw_request(f.server.addr, "GET", target);
        assert_eq!(reply.status, *expected, "GET {shown}");
        let body = String::from_utf8_lossy(&reply.body);
        assert!(!body.contains(SECRET), "GET {shown} leaked the secret");
        assert!(!body.contains("root:"), "GET {shown} leaked /etc/passwd");
        if *expected == 400 {
            // A short reason, in plain text.
            assert!(
                body.starts_with("bad request path: "),
                "GET {shown}: {body}"
            );
            assert_eq!(
                reply.header("content-type"),
                Some("text/plain; charset=utf-8")
            );
        }
    }
    // Percent-encoding that is fine still works.
    let reply = raw_request(f.server.addr, "GET", b"/hello%2etxt");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, b"hello, world\n");
}

// ---------------------------------------------------------------------------------------------
// Big files: streamed, never held in memory

/// A multi-range request over a file larger than 64 MiB: every part compared with the file.
#[tokio::test(flavor = "multi_thread")]
async fn multi_range_on_a_file_over_64_mib() {
    const LEN: u64 = 80 << 20;
    let tmp = TempDir::new("large");
    let static_dir = tmp.path().join("static");
    fs::create_dir_all(&static_dir).unwrap();
    let file = File::create(static_dir.join("large.bin")).unwrap();
    write_pattern(&file, 0..LEN);
    drop(file);
    let f = Fixture::serve(tmp, static_dir);

    let range = "bytes=0-1023,10000000-30000000,67108860-67239999,-65536,40000000-40000000";
    let reply = tokio::time::timeout(Duration::from_secs(120), f.get_range("/large.bin", range))
        .await
        .expect("multi-range response within 2 minutes");
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    reply.assert_exact_length();
    let parts = parse_multipart(reply.header("content-type"), &reply.body);
    let ranges: Vec<Range<u64>> = parts.iter().map(|p| p.range.clone()).collect();
    assert_eq!(
        ranges,
        [
            0..1024,
            10_000_000..30_000_001,
            67_108_860..67_240_000,
            LEN - 65536..LEN,
            40_000_000..40_000_001
        ]
    );
    for part in &parts {
        assert_eq!(part.total, LEN);
        assert!(
            part.data == pattern_bytes(part.range.clone()),
            "part {:?} differs from the file",
            part.range
        );
    }
}

/// A 1 GiB file (sparse, with pattern at its start, middle and end): ranges and one full GET,
/// while the server's resident memory stays small.
#[tokio::test(flavor = "multi_thread")]
async fn a_1_gib_file_is_streamed_in_bounded_memory() {
    const LEN: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    const MAX_RSS_KIB: u64 = 64 * 1024;
    let patterned = [0..MIB, 512 * MIB..513 * MIB, LEN - MIB..LEN];
    let expected = |range: Range<u64>| -> Vec<u8> {
        range
            .map(|i| {
                if patterned.iter().any(|p| p.contains(&i)) {
                    pattern(i)
                } else {
                    0
                }
            })
            .collect()
    };

    let tmp = TempDir::new("huge");
    let static_dir = tmp.path().join("static");
    fs::create_dir_all(&static_dir).unwrap();
    let file = File::create(static_dir.join("huge.bin")).unwrap();
    file.set_len(LEN).unwrap();
    for region in &patterned {
        write_pattern(&file, region.clone());
    }
    drop(file);
    let f = Fixture::serve(tmp, static_dir);
    let mut max_rss = f.server.rss_kib();
    println!("server RSS at start: {max_rss} KiB");

    let test = async {
        // Single range at the very end.
        let reply = f.get_range("/huge.bin", "bytes=1073000000-").await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            reply.header("content-range"),
            "bytes 1073000000-1073741823/1073741824"
        );
        assert!(reply.body == expected(1_073_000_000..LEN));
        max_rss = max_rss.max(f.server.rss_kib());

        // Several ranges across the file, including its sparse (zero) middle.
        let reply = f
            .get_range(
                "/huge.bin",
                "bytes=0-99,536870000-536872000,700000000-700999999,-4096",
            )
            .await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
        reply.assert_exact_length();
        let parts = parse_multipart(reply.header("content-type"), &reply.body);
        assert_eq!(parts.len(), 4);
        for part in &parts {
            assert_eq!(part.total, LEN);
            assert!(
                part.data == expected(part.range.clone()),
                "part {:?}",
                part.range
            );
        }
        max_rss = max_rss.max(f.server.rss_kib());

        // HEAD announces the full length without reading anything.
        let head = f.request(Method::HEAD, "/huge.bin", &[]).await;
        assert_eq!(
            header_value(head.headers(), "content-length"),
            LEN.to_string()
        );

        // The whole file, read as a stream and counted; RSS sampled along the way.
        let mut response = f.get("/huge.bin", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.content_length(), Some(LEN));
        let mut received = 0u64;
        let mut next_sample = 0u64;
        let mut tail = Vec::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            received += chunk.len() as u64;
            if received >= LEN - MIB {
                tail.extend_from_slice(&chunk);
            }
            if received >= next_sample {
                max_rss = max_rss.max(f.server.rss_kib());
                next_sample += 32 * MIB;
            }
        }
        assert_eq!(received, LEN);
        let tail_start = LEN - tail.len() as u64;
        assert!(tail == expected(tail_start..LEN), "end of the full GET");
        max_rss = max_rss.max(f.server.rss_kib());
    };
    tokio::time::timeout(Duration::from_secs(300), test)
        .await
        .expect("1 GiB test within 5 minutes");

    println!("server RSS peak while serving a 1 GiB file: {max_rss} KiB");
    assert!(
        max_rss < MAX_RSS_KIB,
        "server RSS {max_rss} KiB exceeds {MAX_RSS_KIB} KiB"
    );
}
