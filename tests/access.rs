//! Access control end to end (issue 17): which origins may open a WebSocket
//! (`--allowed-origins`, by default the page's own host), connection tokens (JWTs: HS256 with
//! `--auth-jwt-secret`, RS256/ES256 with `--auth-jwt-public-key`) and every reason a token is
//! refused, what the claims mean in chat (nick, presence by `sub`, private rooms, `publish`),
//! expiry (close 4001 "token expired") and refresh, private mirror instances, JWTs on
//! `/api/publish`, the `switchboard token` subcommand, start-up checks of the key files, and
//! that without any of these flags everything is as before.
//!
//! The keys and the secret are the test-only ones of `tests/fixtures/`.

mod support;

use std::{
    future::Future,
    io::Write,
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{
    chat_client::{sorted_members, ChatClient},
    cluster::Cluster,
    project_static_dir,
    raw_ws::{http_exchange, upgrade_request, HttpResponse, OutFrame, RawWs, OP_CLOSE, OP_TEXT},
    redis::Redis,
    server_command,
    tokens::{
        alg_none, claims, fixture, fixture_arg, hs256, hs256_raw_payload, hs256_with_key, now,
        peek_claims, peek_header, secret, sign, Signer, EC_PUBLIC, RSA_PUBLIC, SECRET_FILE,
    },
    ws_client::Ws,
    Server, TempDir,
};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue, Message};

/// How long one expected answer may take.
const ANSWER: Duration = Duration::from_secs(10);

/// How long a whole test may take.
const TEST: Duration = Duration::from_secs(90);

/// Runs a test body within [`TEST`].
async fn bounded(body: impl Future<Output = ()>) {
    timeout(TEST, body)
        .await
        .expect("the test finishes in time");
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A server taking HS256 tokens signed with the test secret.
fn start_hs(extra: &[&str]) -> Server {
    let secret = fixture_arg(SECRET_FILE);
    let mut args = vec!["--auth-jwt-secret", &secret];
    args.extend_from_slice(extra);
    Server::start(&args)
}

// ---------------------------------------------------------------------------------------------
// Handshakes

/// Sends a WebSocket handshake for `path` with these headers (the defaults of
/// [`upgrade_request`] otherwise: `Host: localhost`, no `Origin`) and returns the answer.
async fn handshake(server: &Server, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let request = upgrade_request("GET", path, headers);
    let (response, _, _) = timeout(ANSWER, http_exchange(server.addr, &request))
        .await
        .expect("an answer to the handshake in time")
        .expect("an HTTP response to the handshake");
    response
}

/// Upgrades with these headers and checks the connection works (the echo protocol).
async fn assert_upgrades(server: &Server, path: &str, headers: &[(&str, &str)]) -> RawWs {
    let mut ws = RawWs::connect_with(server.addr, path, headers).await;
    ws.send(OutFrame::text("anyone there?")).await;
    let frame = ws.recv_skipping_pings(ANSWER).await;
    assert_eq!(
        (frame.opcode, frame.text()),
        (OP_TEXT, "anyone there?"),
        "{path} {headers:?}: {}",
        frame.describe()
    );
    ws
}

/// The body the spec gives for a refused origin.
fn origin_refusal(origin: &str) -> String {
    format!("origin {origin} is not allowed to open a WebSocket here (see --allowed-origins)\n")
}

/// Expects the handshake with these headers to be refused for its origin.
async fn assert_origin_refused(server: &Server, headers: &[(&str, &str)]) {
    let origin = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("origin"))
        .map(|(_, value)| *value)
        .expect("an Origin header");
    let response = handshake(server, "/", headers).await;
    assert_eq!(
        response.status,
        403,
        "{headers:?} should be refused: {response:?} {:?}",
        response.body_text()
    );
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{headers:?}"
    );
    assert_eq!(response.body_text(), origin_refusal(origin), "{headers:?}");
}

/// Expects a handshake to be refused for its token, with a body containing `reason`.
async fn assert_token_refused(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
    reason: &str,
) -> String {
    let response = handshake(server, path, headers).await;
    let body = response.body_text();
    assert_eq!(
        response.status, 401,
        "{path} {headers:?} should be refused ({reason}): {response:?} {body:?}"
    );
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with(r#"Bearer error="invalid_token""#),
        "WWW-Authenticate {challenge:?} ({reason})"
    );
    assert!(
        body.contains(reason),
        "the body should say {reason:?}: {body:?}"
    );
    assert_eq!(
        body.trim_end().lines().count(),
        1,
        "one line of reason: {body:?}"
    );
    body
}

/// The path of the root with `?token=`.
fn with_token(token: &str) -> String {
    format!("/?token={token}")
}

/// `switchboard_websocket_handshakes_refused_total{reason=REASON}` (0 while absent).
async fn refused_count(server: &Server, reason: &str) -> f64 {
    let text = reqwest::get(server.http_url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics");
    let label = format!("reason=\"{reason}\"");
    text.lines()
        .filter(|line| line.starts_with("switchboard_websocket_handshakes_refused_total{"))
        .filter(|line| line.contains(&label))
        .map(|line| {
            let value = line[line.find('}').unwrap() + 1..]
                .split_whitespace()
                .next()
                .unwrap_or_default();
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("a number in {line:?}"))
        })
        .sum()
}

/// Waits for the refused-handshake counter of `reason` to reach `expected`, then checks it is
/// exactly that.
async fn assert_refused_count(server: &Server, reason: &str, expected: f64) {
    let deadline = Instant::now() + ANSWER;
    loop {
        let count = refused_count(server, reason).await;
        if count >= expected || Instant::now() >= deadline {
            assert_eq!(
                count, expected,
                "switchboard_websocket_handshakes_refused_total{{reason=\"{reason}\"}}"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Origins

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_page_of_the_same_host_and_port_may_open_a_websocket() {
    bounded(async {
        let server = Server::start(&[]);
        let host = server.addr.to_string();
        let origin = format!("http://{host}");
        assert_upgrades(&server, "/", &[("Host", &host), ("Origin", &origin)]).await;

        // Hosts compare case-insensitively.
        let port = server.addr.port();
        assert_upgrades(
            &server,
            "/",
            &[
                ("Host", &format!("LocalHost:{port}")),
                ("Origin", &format!("http://localhost:{port}")),
            ],
        )
        .await;

        // The Origin's scheme fills in its default port: libwebsockets' test client sends
        // `Host: 127.0.0.1` and `Origin: http://127.0.0.1`.
        for (host, origin) in [
            ("127.0.0.1", "http://127.0.0.1"),
            ("127.0.0.1:80", "http://127.0.0.1"),
            ("127.0.0.1", "http://127.0.0.1:80"),
            ("127.0.0.1:443", "https://127.0.0.1"),
        ] {
            assert_upgrades(&server, "/", &[("Host", host), ("Origin", origin)]).await;
        }
        // Tsung sends its Host again as the Origin, without a scheme.
        assert_upgrades(&server, "/", &[("Host", &host), ("Origin", &host)]).await;
        assert_refused_count(&server, "origin", 0.0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_site_is_refused_with_403_logged_and_counted() {
    bounded(async {
        let server = Server::start(&[]);
        let host = server.addr.to_string();
        let port = server.addr.port();
        assert_origin_refused(
            &server,
            &[("Host", &host), ("Origin", "http://evil.example")],
        )
        .await;
        assert!(
            server.wait_for_log("http://evil.example", ANSWER).is_some(),
            "the refusal is logged with the origin: {:?}",
            server.log()
        );
        assert_refused_count(&server, "origin", 1.0).await;

        let other_port = format!("http://127.0.0.1:{}", port.checked_add(1).unwrap_or(1));
        let other_host = format!("http://localhost:{port}");
        let cases = [
            // Another port of the same host.
            (host.clone(), other_port),
            // Another name of the same machine.
            (host.clone(), other_host),
            // The default port of another scheme.
            ("127.0.0.1:80".to_owned(), "https://127.0.0.1".to_owned()),
            (host.clone(), "http://127.0.0.1".to_owned()),
            // `null` (sandboxed frames, file: pages) only with `*`.
            (host.clone(), "null".to_owned()),
            // A bare host (as Tsung sends) is compared by host too.
            (host.clone(), "evil.example".to_owned()),
        ];
        for (host, origin) in &cases {
            assert_origin_refused(&server, &[("Host", host), ("Origin", origin)]).await;
        }
        assert_refused_count(&server, "origin", 1.0 + cases.len() as f64).await;

        // The server goes on serving the allowed.
        assert_upgrades(
            &server,
            "/",
            &[("Host", &host), ("Origin", &format!("http://{host}"))],
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_without_origin_is_allowed_whatever_the_list() {
    bounded(async {
        for flags in [
            &[][..],
            &["--allowed-origins", "https://chat.example.com"][..],
        ] {
            let server = Server::start(flags);
            assert_upgrades(&server, "/", &[("Host", "somewhere.else:1234")]).await;
            assert_upgrades(&server, "/", &[]).await;
            assert_refused_count(&server, "origin", 0.0).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_take_exact_origins_and_patterns() {
    bounded(async {
        let server = Server::start(&[
            "--allowed-origins",
            "https://chat.example.com,http://127.0.0.1:8080,https://b.example:443,*.example.org,https://*.example.net",
        ]);
        let host = server.addr.to_string();
        let allowed = [
            "https://chat.example.com",
            "https://chat.example.com:443",
            "http://127.0.0.1:8080",
            "https://b.example",
            "https://b.example:443",
            "http://a.example.org",
            "https://a.example.org",
            "https://deep.a.example.org:9000",
            "http://a.example.org:8080",
            "https://x.example.net",
        ];
        for origin in allowed {
            assert_upgrades(&server, "/", &[("Host", &host), ("Origin", origin)]).await;
        }
        let own = format!("http://{host}");
        let refused = [
            "http://chat.example.com",
            "https://chat.example.com:8443",
            "https://other.example.com",
            "http://127.0.0.1:8081",
            "https://127.0.0.1:8080",
            "http://b.example",
            "http://example.org",
            "https://example.org",
            "http://badexample.org",
            "http://a.example.org.evil.test",
            "http://x.example.net",
            "null",
            // With a list, the list decides: the server's own host is not in it.
            own.as_str(),
        ];
        for origin in &refused {
            assert_origin_refused(&server, &[("Host", &host), ("Origin", origin)]).await;
        }
        assert_refused_count(&server, "origin", refused.len() as f64).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_allows_every_origin_even_null() {
    bounded(async {
        let server = Server::start(&["--allowed-origins", "*"]);
        let host = server.addr.to_string();
        for origin in [
            "null",
            "http://evil.example",
            "https://x.test:1",
            "http://127.0.0.1",
        ] {
            assert_upgrades(&server, "/", &[("Host", &host), ("Origin", origin)]).await;
        }
        assert_refused_count(&server, "origin", 0.0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_websocket_handshakes_are_checked_for_their_origin() {
    bounded(async {
        let server = Server::start(&["--api-token", "t0ken"]);
        let http = reqwest::Client::new();
        let page = http
            .get(server.http_url("/index.html"))
            .header("Origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        let publish = http
            .post(server.http_url("/api/publish"))
            .header("Origin", "http://evil.example")
            .bearer_auth("t0ken")
            .json(&json!({"protocol": "lws-mirror-protocol", "room": "x", "message": "m"}))
            .send()
            .await
            .unwrap();
        assert_eq!(publish.status(), 200);
        assert_refused_count(&server, "origin", 0.0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_come_from_the_environment_and_the_config_file_too() {
    bounded(async {
        let mut command = server_command(&[]);
        command.env("SWITCHBOARD_ALLOWED_ORIGINS", "https://env.example");
        let server = Server::start_command(command);
        let host = server.addr.to_string();
        assert_upgrades(
            &server,
            "/",
            &[("Host", &host), ("Origin", "https://env.example")],
        )
        .await;
        assert_origin_refused(
            &server,
            &[("Host", &host), ("Origin", "https://file.example")],
        )
        .await;
        drop(server);

        let dir = TempDir::new("access-config");
        let config = dir.path().join("switchboard.json");
        std::fs::write(
            &config,
            json!({"allowed-origins": "https://file.example"}).to_string(),
        )
        .unwrap();
        let server = Server::start(&["--config", config.to_str().unwrap()]);
        let host = server.addr.to_string();
        assert_upgrades(
            &server,
            "/",
            &[("Host", &host), ("Origin", "https://file.example")],
        )
        .await;
        assert_origin_refused(
            &server,
            &[("Host", &host), ("Origin", "https://env.example")],
        )
        .await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Tokens at the handshake

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_every_handshake_needs_a_token_in_the_url_or_the_header() {
    bounded(async {
        let server = start_hs(&[]);
        assert_token_refused(&server, "/", &[], "missing token").await;
        assert_token_refused(&server, "/?mirror=x", &[], "missing token").await;
        assert_refused_count(&server, "token", 2.0).await;

        let token = hs256(&claims("ann"));
        assert_upgrades(&server, &with_token(&token), &[]).await;
        assert_upgrades(&server, &format!("/some/path?x=1&token={token}"), &[]).await;
        let bearer = format!("Bearer {token}");
        assert_upgrades(&server, "/", &[("Authorization", &bearer)]).await;
        // Claims the server does not know are ignored.
        let more = hs256(&json!({
            "sub": "ann", "exp": now() + 3600, "iss": "backend", "aud": "elsewhere",
            "role": "admin", "iat": now(), "jti": "x1",
        }));
        assert_upgrades(&server, &with_token(&more), &[]).await;

        // A library client, the way an application would connect.
        let mut request = format!("ws://{}/", server.addr)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Authorization", HeaderValue::from_str(&bearer).unwrap());
        let (mut ws, _) = timeout(ANSWER, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect in time")
            .expect("a bearer token is accepted");
        ws.send(Message::Text("hi".into())).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "hi");
        assert_refused_count(&server, "token", 2.0).await;

        // Plain HTTP needs no token.
        let page = reqwest::get(server.http_url("/index.html")).await.unwrap();
        assert_eq!(page.status(), 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_with_another_key_has_an_invalid_signature() {
    bounded(async {
        let secret = fixture_arg(SECRET_FILE);
        let rsa = fixture_arg(RSA_PUBLIC);
        let ec = fixture_arg(EC_PUBLIC);
        let cases = [
            (vec!["--auth-jwt-secret", &secret], Signer::Hs256WrongSecret),
            (vec!["--auth-jwt-public-key", &rsa], Signer::Rs256WrongKey),
            (vec!["--auth-jwt-public-key", &ec], Signer::Es256WrongKey),
        ];
        for (flags, signer) in cases {
            let server = Server::start(&flags);
            let token = sign(signer, &claims("ann"));
            assert_token_refused(&server, &with_token(&token), &[], "invalid signature").await;
            let bearer = format!("Bearer {token}");
            assert_token_refused(
                &server,
                "/",
                &[("Authorization", &bearer)],
                "invalid signature",
            )
            .await;
            assert_refused_count(&server, "token", 2.0).await;
        }

        // A good token whose claims were changed afterwards.
        let server = start_hs(&[]);
        let good = hs256(&claims("ann"));
        let forged = hs256(&json!({"sub": "admin", "exp": now() + 3600}));
        let parts: Vec<&str> = good.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            forged.split('.').nth(1).unwrap(),
            parts[2]
        );
        assert_token_refused(&server, &with_token(&tampered), &[], "invalid signature").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alg_none_is_never_accepted() {
    bounded(async {
        let token = alg_none(&claims("ann"));
        assert_eq!(peek_header(&token), json!({"alg": "none", "typ": "JWT"}));
        let secret = fixture_arg(SECRET_FILE);
        let rsa = fixture_arg(RSA_PUBLIC);
        for flags in [
            vec!["--auth-jwt-secret", &secret],
            vec!["--auth-jwt-public-key", &rsa],
            vec!["--auth-jwt-secret", &secret, "--auth-jwt-public-key", &rsa],
        ] {
            let server = Server::start(&flags);
            assert_token_refused(&server, &with_token(&token), &[], "algorithm").await;
            // The same with the signature of a real token attached.
            let real = hs256(&claims("ann"));
            let with_signature = format!("{token}{}", real.rsplit('.').next().unwrap());
            assert_token_refused(&server, &with_token(&with_signature), &[], "algorithm").await;
            assert_refused_count(&server, "token", 2.0).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_algorithms_of_the_given_keys_are_accepted() {
    bounded(async {
        let secret = fixture_arg(SECRET_FILE);
        let rsa = fixture_arg(RSA_PUBLIC);
        let ec = fixture_arg(EC_PUBLIC);
        let ann = claims("ann");

        // RS256 only: HS256 is refused, also when its HMAC key is the RSA public key (the
        // algorithm-confusion attack), and so is ES256.
        let server = Server::start(&["--auth-jwt-public-key", &rsa]);
        assert_upgrades(&server, &with_token(&sign(Signer::Rs256, &ann)), &[]).await;
        for token in [
            hs256(&ann),
            hs256_with_key(&std::fs::read(fixture(RSA_PUBLIC)).unwrap(), &ann),
            sign(Signer::Es256, &ann),
        ] {
            assert_token_refused(&server, &with_token(&token), &[], "algorithm").await;
        }
        drop(server);

        // ES256 only.
        let server = Server::start(&["--auth-jwt-public-key", &ec]);
        assert_upgrades(&server, &with_token(&sign(Signer::Es256, &ann)), &[]).await;
        let bearer = format!("Bearer {}", sign(Signer::Es256, &ann));
        assert_upgrades(&server, "/", &[("Authorization", &bearer)]).await;
        for token in [hs256(&ann), sign(Signer::Rs256, &ann)] {
            assert_token_refused(&server, &with_token(&token), &[], "algorithm").await;
        }
        drop(server);

        // HS256 only.
        let server = start_hs(&[]);
        assert_upgrades(&server, &with_token(&hs256(&ann)), &[]).await;
        for token in [sign(Signer::Rs256, &ann), sign(Signer::Es256, &ann)] {
            assert_token_refused(&server, &with_token(&token), &[], "algorithm").await;
        }
        drop(server);

        // A secret and a public key: both algorithms, nothing else.
        let server = Server::start(&["--auth-jwt-secret", &secret, "--auth-jwt-public-key", &rsa]);
        assert_upgrades(&server, &with_token(&hs256(&ann)), &[]).await;
        assert_upgrades(&server, &with_token(&sign(Signer::Rs256, &ann)), &[]).await;
        assert_token_refused(
            &server,
            &with_token(&sign(Signer::Es256, &ann)),
            &[],
            "algorithm",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    bounded(async {
        let server = start_hs(&[]);
        let expired = hs256(&json!({"sub": "ann", "exp": now() - 10}));
        assert_token_refused(&server, &with_token(&expired), &[], "expired").await;
        let early = hs256(&json!({"sub": "ann", "exp": now() + 3600, "nbf": now() + 60}));
        let body = assert_token_refused(&server, &with_token(&early), &[], "not valid yet").await;
        assert!(!body.contains("expired"), "{body:?}");
        assert_refused_count(&server, "token", 2.0).await;

        // `nbf` in the past and no `exp` at all are fine.
        let started = hs256(&json!({"sub": "ann", "exp": now() + 3600, "nbf": now() - 5}));
        assert_upgrades(&server, &with_token(&started), &[]).await;
        let forever = hs256(&json!({"sub": "ann"}));
        assert_upgrades(&server, &with_token(&forever), &[]).await;
    })
    .await;
}

/// `exp` ≤ now is expired, with no leeway: a token whose `exp` is this very second is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_exp_is_this_second_is_expired() {
    bounded(async {
        let server = start_hs(&[]);
        // The server's clock reads this second or a later one when it checks.
        let token = hs256(&json!({"sub": "ann", "exp": now()}));
        assert_token_refused(&server, &with_token(&token), &[], "expired").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tokens_are_refused() {
    bounded(async {
        let server = start_hs(&[]);
        let cases = [
            ("not a JWT", "garbage".to_owned()),
            ("three parts of nothing", "a.b.c".to_owned()),
            (
                "no sub",
                hs256(&json!({"name": "Ann", "exp": now() + 3600})),
            ),
            (
                "a sub that is not a string",
                hs256(&json!({"sub": 42, "exp": now() + 3600})),
            ),
            (
                "claims that are not JSON",
                hs256_raw_payload(b"{\"sub\": \"ann\""),
            ),
        ];
        for (what, token) in &cases {
            let body = handshake(&server, &with_token(token), &[]).await;
            assert_eq!(body.status, 401, "{what}: {body:?}");
            assert_token_refused(&server, &with_token(token), &[], "malformed").await;
        }
        let bearer = "Bearer garbage";
        assert_token_refused(&server, "/", &[("Authorization", bearer)], "malformed").await;
        assert_refused_count(&server, "token", 2.0 * cases.len() as f64 + 1.0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_never_shows_a_token() {
    bounded(async {
        let server = start_hs(&[]);
        let good = hs256(&json!({"sub": "log-ann", "exp": now() + 3600}));
        let bad = sign(
            Signer::Hs256WrongSecret,
            &json!({"sub": "log-bob", "exp": now() + 3600}),
        );
        assert_upgrades(&server, &format!("/logged?token={good}&x=1"), &[]).await;
        assert_token_refused(
            &server,
            &format!("/refused?x=2&token={bad}"),
            &[],
            "invalid signature",
        )
        .await;
        let accepted = server
            .wait_for_log("/logged?token=REDACTED&x=1", ANSWER)
            .unwrap_or_else(|| panic!("the access log line of the handshake: {:?}", server.log()));
        assert!(accepted.contains(" 101 "), "{accepted}");
        let refused = server
            .wait_for_log("/refused?x=2&token=REDACTED", ANSWER)
            .unwrap_or_else(|| panic!("the access log line of the refusal: {:?}", server.log()));
        assert!(refused.contains(" 401 "), "{refused}");

        for token in [&good, &bad] {
            let parts: Vec<&str> = token.split('.').collect();
            for line in server.log() {
                for part in &parts[1..] {
                    assert!(
                        !line.contains(part),
                        "the log shows (part of) a token: {line}"
                    );
                }
            }
        }
    })
    .await;
}

/// However the `token` parameter is spelled in the URL (its name percent-encoded, which the
/// server decodes), the access log does not show the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percent_encoded_token_parameter_is_not_logged_either() {
    bounded(async {
        let server = start_hs(&[]);
        let token = hs256(&json!({"sub": "log-cy", "exp": now() + 3600}));
        let response = handshake(&server, &format!("/encoded?%74oken={token}"), &[]).await;
        let signature = token.rsplit('.').next().unwrap();
        let line = server
            .wait_for_log("/encoded?", ANSWER)
            .unwrap_or_else(|| panic!("the access log line: {:?}", server.log()));
        assert!(
            server.log().iter().all(|line| !line.contains(signature)),
            "the handshake was answered {} and the log shows its token: {line}",
            response.status
        );
    })
    .await;
}

/// The server's own `--help`-style rule for secrets: the file's one trailing newline is not part
/// of the secret (the fixture ends with one; tokens are signed without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_file_loses_one_trailing_newline() {
    bounded(async {
        let server = start_hs(&[]);
        assert_upgrades(&server, &with_token(&hs256(&claims("ann"))), &[]).await;
        let mut with_newline = secret();
        with_newline.push(b'\n');
        let token = hs256_with_key(&with_newline, &claims("ann"));
        assert_token_refused(&server, &with_token(&token), &[], "invalid signature").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_settings_come_from_the_environment_and_the_config_file_too() {
    bounded(async {
        let mut command = server_command(&[]);
        command.env("SWITCHBOARD_AUTH_JWT_PUBLIC_KEY", fixture(RSA_PUBLIC));
        let server = Server::start_command(command);
        assert_upgrades(
            &server,
            &with_token(&sign(Signer::Rs256, &claims("a"))),
            &[],
        )
        .await;
        assert_token_refused(&server, "/", &[], "missing token").await;
        drop(server);

        let mut command = server_command(&[]);
        command.env("SWITCHBOARD_AUTH_JWT_SECRET", fixture(SECRET_FILE));
        let server = Server::start_command(command);
        assert_upgrades(&server, &with_token(&hs256(&claims("a"))), &[]).await;
        assert_token_refused(&server, "/", &[], "missing token").await;
        drop(server);

        let dir = TempDir::new("access-config");
        let config = dir.path().join("switchboard.json");
        std::fs::write(
            &config,
            json!({
                "auth-jwt-secret": fixture(SECRET_FILE),
                "auth-jwt-public-key": fixture(EC_PUBLIC),
            })
            .to_string(),
        )
        .unwrap();
        let server = Server::start(&["--config", config.to_str().unwrap()]);
        assert_upgrades(&server, &with_token(&hs256(&claims("a"))), &[]).await;
        assert_upgrades(
            &server,
            &with_token(&sign(Signer::Es256, &claims("a"))),
            &[],
        )
        .await;
        assert_token_refused(&server, "/", &[], "missing token").await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Chat with tokens

/// A chat connection with this token in the URL.
async fn chat(server: &Server, token: &str) -> ChatClient {
    ChatClient::connect_path(server.addr, &with_token(token)).await
}

/// A token for `sub` with more claims.
fn token_with(sub: &str, more: Value) -> String {
    let mut claims = claims(sub);
    for (key, value) in more.as_object().expect("an object") {
        claims[key] = value.clone();
    }
    hs256(&claims)
}

/// Reads events until a `message` in `room` with `text`, failing on any event `unwanted`
/// says is not allowed meanwhile; returns the message.
async fn read_until_message(
    client: &mut ChatClient,
    room: &str,
    text: &str,
    unwanted: impl Fn(&Value) -> bool,
) -> Value {
    loop {
        let event = client.next().await;
        assert!(!unwanted(&event), "unexpected {event} before {text:?}");
        if event["type"] == "message" && event["room"] == room && event["text"] == text {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_nick_is_the_token_name() {
    bounded(async {
        let server = start_hs(&[]);
        let mut ann = chat(&server, &token_with("u-ann", json!({"name": "Ann"}))).await;
        let joined = ann
            .join_with(json!({"type": "join", "room": "lobby"}))
            .await;
        assert_eq!(joined["nick"], "Ann", "{joined}");
        assert_eq!(joined["members"], json!(["Ann"]));
        // The same nick as the name is fine.
        assert_eq!(ann.join("second", "Ann").await["nick"], "Ann");

        // Another nick is forbidden, in a join or a nick request; the connection goes on.
        ann.send(json!({"type": "join", "room": "third", "nick": "Bob"}))
            .await;
        ann.expect_error("forbidden").await;
        ann.send(json!({"type": "nick", "nick": "Bob"})).await;
        ann.expect_error("forbidden").await;
        ann.assert_usable("lobby").await;

        // Without `name`, the nick is the `sub`.
        let mut plain = chat(&server, &hs256(&claims("u-plain"))).await;
        let joined = plain
            .join_with(json!({"type": "join", "room": "lobby"}))
            .await;
        assert_eq!(joined["nick"], "u-plain");
        assert_eq!(sorted_members(&joined), ["Ann", "u-plain"]);
        assert_eq!(
            ann.next_presence_within("lobby", ANSWER).await,
            Some(json!({"type": "presence", "room": "lobby", "event": "join", "nick": "u-plain"}))
        );
        plain.say("lobby", "hello Ann").await;
        assert_eq!(ann.next_message("lobby").await["nick"], "u-plain");
        ann.say("lobby", "hello").await;
        ann.next_message("lobby").await;
        let message = read_until_message(&mut plain, "lobby", "hello", |_| false).await;
        assert_eq!(
            (&message["nick"], &message["text"]),
            (&json!("Ann"), &json!("hello"))
        );
        // The failed join did not happen.
        ann.say("third", "here?").await;
        ann.expect_error("not_in_room").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_of_one_sub_are_one_member() {
    bounded(async {
        let server = start_hs(&[]);
        one_user_on_two_connections(server.addr, server.addr).await;
    })
    .await;
}

/// Presence by `sub` across the nodes of a cluster (skipped without `redis-server`): the same,
/// with the user's second connection on another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_of_one_sub_on_two_nodes_are_one_member() {
    let Some(redis) = Redis::start_or_skip("presence by sub across nodes") else {
        return;
    };
    bounded(async {
        let secret = fixture_arg(SECRET_FILE);
        let cluster = Cluster::start(redis, 2, &["--auth-jwt-secret", &secret]).await;
        one_user_on_two_connections(cluster.nodes[0].addr, cluster.nodes[1].addr).await;
    })
    .await;
}

/// Ann's two connections (the first on `first`, with Bob, the second on `second`) are one
/// member of room `r`: listed once, one presence `join`, both get the room's messages, one
/// leaving and coming back changes nothing, and Ann leaves with her last connection.
async fn one_user_on_two_connections(first: SocketAddr, second: SocketAddr) {
    let connect = |addr: SocketAddr, token: String| async move {
        ChatClient::connect_path(addr, &with_token(&token)).await
    };
    let join = json!({"type": "join", "room": "r"});
    let ann_token = token_with("u-ann", json!({"name": "Ann"}));
    let mut bob = connect(first, token_with("u-bob", json!({"name": "Bob"}))).await;
    bob.join_with(join.clone()).await;

    let mut ann1 = connect(first, ann_token.clone()).await;
    ann1.join_with(join.clone()).await;
    assert_eq!(
        bob.next_presence_within("r", ANSWER).await,
        Some(json!({"type": "presence", "room": "r", "event": "join", "nick": "Ann"}))
    );

    // The second connection of the same sub: listed once, no presence event.
    let mut ann2 = connect(second, ann_token).await;
    let joined = ann2.join_with(join.clone()).await;
    assert_eq!(sorted_members(&joined), ["Ann", "Bob"], "{joined}");
    ann2.say("r", "marker 1").await;
    let is_presence = |event: &Value| event["type"] == "presence";
    read_until_message(&mut bob, "r", "marker 1", is_presence).await;
    // Both connections receive the room's messages.
    read_until_message(&mut ann1, "r", "marker 1", is_presence).await;
    read_until_message(&mut ann2, "r", "marker 1", is_presence).await;
    bob.say("r", "to both").await;
    for ann in [&mut ann1, &mut ann2] {
        let message = ann.next_message("r").await;
        assert_eq!(
            (&message["nick"], &message["text"]),
            (&json!("Bob"), &json!("to both"))
        );
    }
    bob.next_message("r").await;

    // One of them leaves and comes back: still one member all along, no presence.
    ann1.leave("r").await;
    let joined = ann1.join_with(join.clone()).await;
    assert_eq!(sorted_members(&joined), ["Ann", "Bob"], "{joined}");
    ann1.say("r", "marker 2").await;
    read_until_message(&mut bob, "r", "marker 2", is_presence).await;
    read_until_message(&mut ann2, "r", "marker 2", is_presence).await;

    // One disconnects: the other is still there.
    ann1.close().await;
    ann2.say("r", "marker 3").await;
    read_until_message(&mut bob, "r", "marker 3", is_presence).await;
    bob.expect_silence(Duration::from_millis(500)).await;
    let mut cy = connect(first, token_with("u-cy", json!({"name": "Cy"}))).await;
    let joined = cy.join_with(join).await;
    assert_eq!(sorted_members(&joined), ["Ann", "Bob", "Cy"], "{joined}");
    assert_eq!(
        bob.next_presence_within("r", ANSWER).await.unwrap()["nick"],
        "Cy"
    );

    // The last one goes: now Ann leaves.
    ann2.close().await;
    assert_eq!(
        bob.next_presence_within("r", ANSWER).await,
        Some(json!({"type": "presence", "room": "r", "event": "leave", "nick": "Ann"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_explicit_leave_of_a_sub_is_its_presence_leave() {
    bounded(async {
        let server = start_hs(&[]);
        let ann_token = token_with("u-ann", json!({"name": "Ann"}));
        let mut bob = chat(&server, &token_with("u-bob", json!({"name": "Bob"}))).await;
        bob.join_with(json!({"type": "join", "room": "r"})).await;
        let mut ann1 = chat(&server, &ann_token).await;
        let mut ann2 = chat(&server, &ann_token).await;
        ann1.join_with(json!({"type": "join", "room": "r"})).await;
        ann2.join_with(json!({"type": "join", "room": "r"})).await;
        assert_eq!(
            bob.next_presence_within("r", ANSWER).await.unwrap()["event"],
            "join"
        );

        ann2.leave("r").await;
        ann1.say("r", "marker").await;
        read_until_message(&mut bob, "r", "marker", |event| event["type"] == "presence").await;
        ann1.leave("r").await;
        assert_eq!(
            bob.next_presence_within("r", ANSWER).await,
            Some(json!({"type": "presence", "room": "r", "event": "leave", "nick": "Ann"}))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_rooms_need_a_matching_rooms_claim() {
    bounded(async {
        let server = start_hs(&[]);
        let mut ann = chat(
            &server,
            &token_with(
                "u-ann",
                json!({"name": "Ann", "rooms": ["private:team", "private:x-*"]}),
            ),
        )
        .await;
        for room in ["private:team", "private:x-42", "private:x-", "lobby"] {
            let joined = ann.join_with(json!({"type": "join", "room": room})).await;
            assert_eq!(joined["room"], room);
        }
        ann.assert_usable("private:team").await;
        ann.assert_usable("private:x-42").await;

        for room in [
            "private:other",
            "private:tea",
            "private:team-b",
            "private:x",
        ] {
            ann.send(json!({"type": "join", "room": room})).await;
            let error = ann.expect_error("forbidden").await;
            assert_eq!(error["room"], room, "{error}");
        }
        // The connection stays open and can still join an open room.
        let joined = ann
            .join_with(json!({"type": "join", "room": "public"}))
            .await;
        assert_eq!(joined["members"], json!(["Ann"]));
        ann.assert_usable("public").await;

        // Without a rooms claim, no private room.
        let mut bob = chat(&server, &token_with("u-bob", json!({"name": "Bob"}))).await;
        bob.send(json!({"type": "join", "room": "private:team"}))
            .await;
        assert_eq!(bob.expect_error("forbidden").await["room"], "private:team");
        bob.join_with(json!({"type": "join", "room": "lobby"}))
            .await;
        bob.assert_usable("lobby").await;
        // Bob was never in the private room: Ann saw nothing of him there.
        ann.say("private:team", "just us").await;
        let message = ann.next_message("private:team").await;
        assert_eq!(message["text"], "just us");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_publish_false_may_listen_but_not_say() {
    bounded(async {
        let server = start_hs(&[]);
        let mut muted = chat(
            &server,
            &token_with("u-mute", json!({"name": "Mute", "publish": false})),
        )
        .await;
        let mut bob = chat(&server, &token_with("u-bob", json!({"name": "Bob"}))).await;
        bob.join_with(json!({"type": "join", "room": "r"})).await;
        muted.join_with(json!({"type": "join", "room": "r"})).await;

        muted.say("r", "should not arrive").await;
        let error = muted.expect_error("forbidden").await;
        assert_eq!(error["room"], "r", "{error}");

        bob.say("r", "marker").await;
        let sent = |event: &Value| event["text"] == "should not arrive";
        read_until_message(&mut bob, "r", "marker", sent).await;
        read_until_message(&mut muted, "r", "marker", sent).await;
        bob.expect_silence(Duration::from_millis(300)).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Expiry and refresh

/// What arrived on a chat connection until it closed.
struct Closed {
    events: Vec<Value>,
    code: u16,
    reason: String,
    /// Wall-clock milliseconds when the close frame arrived.
    at_ms: u64,
}

/// Reads a chat connection until its close frame (at most until `limit_ms` on the wall clock).
async fn read_until_close(ws: &mut Ws, limit_ms: u64) -> Closed {
    let mut events = Vec::new();
    loop {
        let left = Duration::from_millis(limit_ms.saturating_sub(now_ms()));
        match timeout(left, ws.next()).await {
            Err(_) => panic!("no close by {limit_ms} ms (now {}): {events:?}", now_ms()),
            Ok(Some(Ok(Message::Text(text)))) => {
                events.push(serde_json::from_str(&text).expect("events are JSON"))
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(Some(Ok(Message::Close(frame)))) => {
                let at_ms = now_ms();
                let frame = frame.expect("a close frame with a code");
                return Closed {
                    events,
                    code: u16::from(frame.code),
                    reason: frame.reason.to_string(),
                    at_ms,
                };
            }
            other => panic!("expected events then a close, got {other:?} after {events:?}"),
        }
    }
}

/// Reads a chat connection until `until_ms` on the wall clock; fails if it closes meanwhile.
async fn events_until(ws: &mut Ws, until_ms: u64) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let left = Duration::from_millis(until_ms.saturating_sub(now_ms()));
        match timeout(left, ws.next()).await {
            Err(_) => return events,
            Ok(Some(Ok(Message::Text(text)))) => {
                events.push(serde_json::from_str(&text).expect("events are JSON"))
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("the connection should stay open, got {other:?} after {events:?}"),
        }
    }
}

/// Checks a close for an expired token: 4001 "token expired", not before `exp` and not long
/// after it.
fn assert_expired_at(code: u16, reason: &str, at_ms: u64, exp: u64) {
    assert_eq!((code, reason), (4001, "token expired"));
    let exp_ms = exp * 1000;
    // Timers of the server and this clock are the same clock; a few ms of rounding at most.
    assert!(
        at_ms + 20 >= exp_ms,
        "closed {} ms before exp",
        exp_ms - at_ms
    );
    assert!(
        at_ms <= exp_ms + 2000,
        "closed {} ms after exp",
        at_ms - exp_ms
    );
}

/// A token for `sub` expiring in `secs` - 1 to `secs` seconds (exp is whole seconds), and its
/// `exp`.
fn short_token(sub: &str, secs: u64, more: Value) -> (String, u64) {
    let exp = now() + secs;
    let mut claims = json!({"sub": sub, "exp": exp});
    for (key, value) in more.as_object().expect("an object") {
        claims[key] = value.clone();
    }
    (hs256(&claims), exp)
}

/// The `expiring` event, which must come first and at once.
async fn expect_expiring(client: &mut ChatClient, exp: u64) -> u64 {
    let event = client
        .next_within(Duration::from_secs(2))
        .await
        .expect("expiring at once when less than 30 s remain");
    assert_eq!(event["type"], "expiring", "{event}");
    let in_ms = event["in_ms"].as_u64().expect("in_ms");
    let left = (exp * 1000).saturating_sub(now_ms());
    assert!(in_ms > 0 && in_ms <= 30_000, "{event}");
    assert!(
        in_ms + 200 >= left && in_ms <= left + 1000,
        "in_ms {in_ms} but {left} ms are left: {event}"
    );
    in_ms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_token_near_its_exp_is_warned_then_closed_with_4001() {
    bounded(async {
        let server = start_hs(&[]);
        let mut bob = chat(&server, &token_with("u-bob", json!({"name": "Bob"}))).await;
        bob.join_with(json!({"type": "join", "room": "r"})).await;

        let (token, exp) = short_token("u-ann", 3, json!({"name": "Ann"}));
        let mut ann = chat(&server, &token).await;
        expect_expiring(&mut ann, exp).await;
        ann.join_with(json!({"type": "join", "room": "r"})).await;
        ann.assert_usable("r").await;
        assert_eq!(
            bob.next_presence_within("r", ANSWER).await.unwrap()["event"],
            "join"
        );

        let closed = read_until_close(&mut ann.ws, exp * 1000 + 3000).await;
        assert_expired_at(closed.code, &closed.reason, closed.at_ms, exp);
        assert!(
            closed.events.iter().all(|event| event["type"] != "error"),
            "{:?}",
            closed.events
        );
        // The others see Ann go.
        let leave = bob.next_presence_within("r", ANSWER).await;
        assert_eq!(
            leave,
            Some(json!({"type": "presence", "room": "r", "event": "leave", "nick": "Ann"}))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_more_than_30_s_left_is_not_warned_at_once() {
    bounded(async {
        let server = start_hs(&[]);
        let exp = now() + 40;
        let mut ann = chat(&server, &hs256(&json!({"sub": "ann", "exp": exp}))).await;
        // The first event is the answer to the first request: no `expiring` came before it.
        ann.say("r", "not in it yet").await;
        ann.expect_error("not_in_room").await;
        let joined = ann.join_with(json!({"type": "join", "room": "r"})).await;
        assert_eq!(joined["nick"], "ann");
        // And none comes now, while more than 30 s remain.
        ann.say("r", "marker").await;
        read_until_message(&mut ann, "r", "marker", |event| event["type"] == "expiring").await;
    })
    .await;
}

/// With a little more than 30 s left at the handshake, `expiring` comes 30 s before `exp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_token_is_warned_30_s_before_its_exp() {
    bounded(async {
        let server = start_hs(&[]);
        let exp = now() + 32;
        let mut ann = chat(&server, &hs256(&json!({"sub": "ann", "exp": exp}))).await;
        ann.say("r", "not in it yet").await;
        ann.expect_error("not_in_room").await;
        let notice_ms = exp * 1000 - 30_000;
        let limit = Duration::from_millis((notice_ms + 2000).saturating_sub(now_ms()));
        let event = ann
            .next_within(limit)
            .await
            .expect("expiring within 2 s of exp - 30 s");
        let arrived_ms = now_ms();
        assert_eq!(event["type"], "expiring", "{event}");
        let in_ms = event["in_ms"].as_u64().expect("in_ms");
        assert!(
            (29_000..=30_000).contains(&in_ms),
            "30 s before exp: {event}"
        );
        assert!(
            arrived_ms + 20 >= notice_ms,
            "{event} came {} ms before exp - 30 s",
            notice_ms - arrived_ms
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_is_closed_with_4001_at_exp() {
    bounded(async {
        let server = start_hs(&[]);
        let (token, exp) = short_token("ann", 3, json!({}));
        let path = with_token(&token);
        let mut echo = assert_upgrades(&server, &path, &[]).await;
        let mut counter = RawWs::connect_with(
            server.addr,
            &path,
            &[("Sec-WebSocket-Protocol", "dumb-increment-protocol")],
        )
        .await;
        let mut mirror = RawWs::connect_with(
            server.addr,
            &format!("{path}&mirror=expiry"),
            &[("Sec-WebSocket-Protocol", "lws-mirror-protocol")],
        )
        .await;
        for ws in [&mut echo, &mut counter, &mut mirror] {
            let deadline = exp * 1000 + 3000;
            let close = loop {
                let left = Duration::from_millis(deadline.saturating_sub(now_ms()));
                let frame = ws.recv(left).await;
                if frame.opcode == OP_CLOSE {
                    break frame;
                }
            };
            let at_ms = now_ms();
            assert_expired_at(
                close.close_code().expect("a close code"),
                &close.close_reason(),
                at_ms,
                exp,
            );
            // Answer the close; the server then ends the connection.
            let _ = ws.writer.send(&OutFrame::close(4001, "")).await;
            ws.reader.read_to_end(ANSWER).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_with_a_later_token_keeps_the_connection_open() {
    bounded(async {
        let server = start_hs(&[]);
        let (token, exp) = short_token("u-ann", 4, json!({"name": "Ann"}));
        let mut ann = chat(&server, &token).await;
        expect_expiring(&mut ann, exp).await;
        ann.join_with(json!({"type": "join", "room": "lobby"}))
            .await;

        // The new token: later exp, other rooms, another name (the nick stays).
        let later = now() + 3600;
        let refresh = hs256(&json!({
            "sub": "u-ann", "name": "Annie", "exp": later, "rooms": ["private:later"],
        }));
        ann.send(json!({"type": "refresh", "token": refresh})).await;
        let refreshed = ann.next().await;
        assert_eq!(refreshed, json!({"type": "refreshed", "exp": later}));

        // Past the first token's exp (by a second and a half), still open and nothing said.
        let events = events_until(&mut ann.ws, exp * 1000 + 1500).await;
        assert_eq!(events, Vec::<Value>::new());
        ann.assert_usable("lobby").await;
        let message = {
            ann.say("lobby", "who am I").await;
            ann.next_message("lobby").await
        };
        assert_eq!(message["nick"], "Ann", "the nick stays: {message}");
        // The new token's rooms are in force.
        let joined = ann
            .join_with(json!({"type": "join", "room": "private:later"}))
            .await;
        assert_eq!(joined["members"], json!(["Ann"]));
    })
    .await;
}

/// The new token's claims are in force after a refresh: `publish`, and its `exp`, when the
/// connection is then closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_connection_lives_by_the_new_token() {
    bounded(async {
        let server = start_hs(&[]);
        let (token, exp) = short_token("u-ann", 3, json!({"name": "Ann", "publish": false}));
        let mut ann = chat(&server, &token).await;
        expect_expiring(&mut ann, exp).await;
        ann.join_with(json!({"type": "join", "room": "r"})).await;
        ann.say("r", "muted").await;
        ann.expect_error("forbidden").await;

        let exp2 = exp + 3;
        let refresh = hs256(&json!({"sub": "u-ann", "exp": exp2}));
        ann.send(json!({"type": "refresh", "token": refresh})).await;
        assert_eq!(ann.next().await, json!({"type": "refreshed", "exp": exp2}));
        ann.assert_usable("r").await;

        // Open past the first exp, closed at the second.
        let closed = read_until_close(&mut ann.ws, exp2 * 1000 + 3000).await;
        assert!(
            closed.at_ms >= exp * 1000 + 1000,
            "closed at the old exp: {} ms after it",
            closed.at_ms.saturating_sub(exp * 1000)
        );
        assert_expired_at(closed.code, &closed.reason, closed.at_ms, exp2);
    })
    .await;
}

/// A refresh may also shorten a connection's life: a token valid for an hour, or one without
/// `exp`, replaced by one that expires in a few seconds: the connection is closed at the new
/// `exp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_to_an_earlier_exp_closes_the_connection_at_the_new_exp() {
    bounded(async {
        let server = start_hs(&[]);
        let long = hs256(&json!({"sub": "u-ann", "exp": now() + 3600}));
        let forever = hs256(&json!({"sub": "u-ann"}));
        let mut clients = Vec::new();
        for token in [long, forever] {
            let mut ann = chat(&server, &token).await;
            ann.join_with(json!({"type": "join", "room": "r"})).await;
            clients.push(ann);
        }
        let (short, exp) = short_token("u-ann", 3, json!({}));
        for ann in &mut clients {
            ann.send(json!({"type": "refresh", "token": short})).await;
            let refreshed = ann.next_of("refreshed").await;
            assert_eq!(refreshed, json!({"type": "refreshed", "exp": exp}));
        }
        for ann in &mut clients {
            let closed = read_until_close(&mut ann.ws, exp * 1000 + 3000).await;
            assert_expired_at(closed.code, &closed.reason, closed.at_ms, exp);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_refresh_is_refused_and_the_old_token_stays_in_force() {
    bounded(async {
        let server = start_hs(&[]);
        let (token, exp) = short_token("u-ann", 4, json!({"name": "Ann"}));
        let mut ann = chat(&server, &token).await;
        expect_expiring(&mut ann, exp).await;

        let later = now() + 3600;
        let bad_tokens = [
            "garbage".to_owned(),
            sign(
                Signer::Hs256WrongSecret,
                &json!({"sub": "u-ann", "exp": later}),
            ),
            alg_none(&json!({"sub": "u-ann", "exp": later})),
            hs256(&json!({"sub": "u-ann", "exp": now() - 10})),
            hs256(&json!({"sub": "u-ann", "exp": later, "nbf": later - 60})),
            hs256(&json!({"exp": later})),
        ];
        for bad in &bad_tokens {
            ann.send(json!({"type": "refresh", "token": bad})).await;
            ann.expect_error("bad_token").await;
        }
        // A valid token of someone else.
        let bob = hs256(&json!({"sub": "u-bob", "exp": later}));
        ann.send(json!({"type": "refresh", "token": bob})).await;
        ann.expect_error("forbidden").await;

        // Still the old token: open until its exp, closed at it.
        ann.join_with(json!({"type": "join", "room": "r"})).await;
        ann.assert_usable("r").await;
        let closed = read_until_close(&mut ann.ws, exp * 1000 + 3000).await;
        assert_expired_at(closed.code, &closed.reason, closed.at_ms, exp);
        assert!(
            closed
                .events
                .iter()
                .all(|event| event["type"] != "refreshed"),
            "{:?}",
            closed.events
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Mirror instances

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_mirror_instance_needs_the_claim() {
    bounded(async {
        let server = start_hs(&[]);
        let mirror = [("Sec-WebSocket-Protocol", "lws-mirror-protocol")];
        let no_claim = [
            hs256(&claims("ann")),
            token_with(
                "ann",
                json!({"rooms": ["private:y", "private:xy*", "private:"]}),
            ),
        ];
        for token in &no_claim {
            let response = handshake(
                &server,
                &format!("/?mirror=private:x&token={token}"),
                &mirror,
            )
            .await;
            let body = response.body_text();
            assert_eq!(response.status, 403, "{token}: {response:?} {body:?}");
            assert!(
                body.contains("room") && body.contains("private:x"),
                "the body says the room is not allowed: {body:?}"
            );
        }

        // With the claim (exact or a pattern), the instance works.
        let exact = token_with("ann", json!({"rooms": ["private:x"]}));
        let pattern = token_with("bob", json!({"rooms": ["private:*"]}));
        let mut ann = RawWs::connect_with(
            server.addr,
            &format!("/?mirror=private:x&token={exact}"),
            &mirror,
        )
        .await;
        let mut bob = RawWs::connect_with(
            server.addr,
            &format!("/?token={pattern}&mirror=private:x"),
            &mirror,
        )
        .await;
        // Bob's session is running once it answers a ping.
        bob.send(OutFrame::ping("ready?")).await;
        assert_eq!(bob.recv_skipping_pings(ANSWER).await.text(), "ready?");
        ann.send(OutFrame::text("stroke")).await;
        for ws in [&mut ann, &mut bob] {
            let frame = ws.recv_skipping_pings(ANSWER).await;
            assert_eq!((frame.opcode, frame.text()), (OP_TEXT, "stroke"));
        }

        // Instances that are not private need no claim.
        let plain = hs256(&claims("cy"));
        RawWs::connect_with(
            server.addr,
            &format!("/?mirror=public&token={plain}"),
            &mirror,
        )
        .await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// /api/publish

/// Publishes `message` to the mirror instance "news" with this bearer token.
async fn publish_text(server: &Server, bearer: &str, message: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(server.http_url("/api/publish"))
        .bearer_auth(bearer)
        .json(&json!({"protocol": "lws-mirror-protocol", "room": "news", "message": message}))
        .send()
        .await
        .expect("POST /api/publish");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

async fn publish(server: &Server, bearer: &str) -> (u16, String) {
    publish_text(server, bearer, "m").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_publish_takes_the_api_token_or_a_jwt_allowed_to_publish() {
    bounded(async {
        let server = start_hs(&["--api-token", "t0ken"]);
        let listener_token = hs256(&claims("listener"));
        let mut listener = RawWs::connect_with(
            server.addr,
            &format!("/?mirror=news&token={listener_token}"),
            &[("Sec-WebSocket-Protocol", "lws-mirror-protocol")],
        )
        .await;
        listener.send(OutFrame::ping("ready?")).await;
        assert_eq!(listener.recv(ANSWER).await.text(), "ready?");

        let api_jwt = token_with("backend", json!({"publish_api": true}));
        for (bearer, label) in [
            ("t0ken", "via the API token"),
            (api_jwt.as_str(), "via a JWT"),
        ] {
            let (status, body) = publish_text(&server, bearer, label).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(
                serde_json::from_str::<Value>(&body).unwrap(),
                json!({"reached": 1})
            );
            let frame = listener.recv_skipping_pings(ANSWER).await;
            assert_eq!(frame.text(), label);
        }

        for jwt in [
            hs256(&claims("user")),
            token_with("user", json!({"publish_api": false})),
        ] {
            let (status, body) = publish_text(&server, &jwt, "refused").await;
            assert_eq!(status, 403, "a JWT without publish_api: {body}");
        }
        // Neither the API token nor a valid JWT.
        let expired = hs256(&json!({"sub": "backend", "publish_api": true, "exp": now() - 10}));
        let wrong_key = sign(
            Signer::Hs256WrongSecret,
            &json!({"sub": "backend", "publish_api": true, "exp": now() + 3600}),
        );
        for bearer in ["wrong", expired.as_str(), wrong_key.as_str()] {
            let (status, body) = publish_text(&server, bearer, "refused").await;
            assert!(status == 401 || status == 403, "{bearer}: {status} {body}");
        }
        // Nothing of that reached the listener: the next frame is the next good publish.
        let (status, _) = publish_text(&server, "t0ken", "after").await;
        assert_eq!(status, 200);
        assert_eq!(listener.recv_skipping_pings(ANSWER).await.text(), "after");
        listener.send(OutFrame::ping("last")).await;
        assert_eq!(listener.recv(ANSWER).await.text(), "last");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_publish_is_on_with_only_a_jwt_key() {
    bounded(async {
        let server = start_hs(&[]);
        let (status, body) = publish(
            &server,
            &token_with("backend", json!({"publish_api": true})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"reached": 0})
        );
        let (status, body) = publish(&server, &hs256(&claims("user"))).await;
        assert_eq!(status, 403, "{body}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// `switchboard token`

/// Runs `switchboard ARGS...` to its end (at most 10 s): exit code, stdout, stderr.
fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("SWITCHBOARD_AUTH_JWT_SECRET")
        .env_remove("SWITCHBOARD_AUTH_JWT_PUBLIC_KEY")
        .env_remove("SWITCHBOARD_ALLOWED_ORIGINS")
        .envs(env.iter().copied());
    support::run_to_exit(command)
}

/// Runs `switchboard token ARGS...` and returns the token it printed.
fn mint(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_binary(&all, env);
    assert_eq!(code, Some(0), "switchboard {all:?}: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line, the token: {stdout:?}");
    let token = lines[0].trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token:?}");
    assert_eq!(peek_header(&token)["alg"], "HS256", "{token}");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_subcommand_mints_tokens_the_server_accepts() {
    bounded(async {
        let secret = fixture_arg(SECRET_FILE);
        let minted_at = now();
        let token = mint(
            &[
                "--sub",
                "ann",
                "--name",
                "Ann",
                "--rooms",
                "private:team,private:x-*",
                "--ttl",
                "1h",
                "--auth-jwt-secret",
                &secret,
            ],
            &[],
        );
        let claims = peek_claims(&token);
        assert_eq!(claims["sub"], "ann", "{claims}");
        assert_eq!(claims["name"], "Ann", "{claims}");
        assert_eq!(claims["rooms"], json!(["private:team", "private:x-*"]));
        let exp = claims["exp"].as_u64().expect("exp");
        assert!(
            (minted_at + 3600..=now() + 3601).contains(&exp),
            "exp {exp} is an hour from {minted_at}"
        );
        assert_ne!(claims["publish"], false, "{claims}");
        assert_ne!(claims["publish_api"], true, "{claims}");

        let server = start_hs(&["--api-token", "t0ken"]);
        let mut ann = chat(&server, &token).await;
        for room in ["private:team", "private:x-1"] {
            let joined = ann.join_with(json!({"type": "join", "room": room})).await;
            assert_eq!(joined["nick"], "Ann");
        }
        ann.assert_usable("private:x-1").await;
        let (status, _) = publish(&server, &token).await;
        assert_eq!(status, 403);

        // The other options, and the secret from the environment.
        let token = mint(
            &[
                "--sub",
                "backend",
                "--no-publish",
                "--publish-api",
                "--ttl",
                "90",
            ],
            &[("SWITCHBOARD_AUTH_JWT_SECRET", &secret)],
        );
        let claims = peek_claims(&token);
        assert_eq!(claims["sub"], "backend");
        assert_eq!(claims["publish"], false, "{claims}");
        assert_eq!(claims["publish_api"], true, "{claims}");
        let exp = claims["exp"].as_u64().expect("exp");
        assert!((minted_at + 90..=now() + 91).contains(&exp), "exp {exp}");
        let (status, body) = publish(&server, &token).await;
        assert_eq!(status, 200, "{body}");
        let mut backend = chat(&server, &token).await;
        backend
            .join_with(json!({"type": "join", "room": "lobby"}))
            .await;
        backend.say("lobby", "muted").await;
        backend.expect_error("forbidden").await;

        let token = mint(
            &["--sub", "cy", "--ttl", "30s", "--auth-jwt-secret", &secret],
            &[],
        );
        let exp = peek_claims(&token)["exp"].as_u64().expect("exp");
        assert!((minted_at + 30..=now() + 31).contains(&exp), "exp {exp}");
        let mut cy = chat(&server, &token).await;
        // Less than 30 s left (the clock has moved on since minting, if only by a ms).
        assert_eq!(cy.next().await["type"], "expiring");
        let joined = cy.join_with(json!({"type": "join", "room": "lobby"})).await;
        assert_eq!(joined["nick"], "cy");

        // The default lifetime is an hour.
        let token = mint(&["--sub", "dee", "--auth-jwt-secret", &secret], &[]);
        let exp = peek_claims(&token)["exp"].as_u64().expect("exp");
        assert!(
            (minted_at + 3600..=now() + 3601).contains(&exp),
            "exp {exp}"
        );
    })
    .await;
}

#[test]
fn the_token_subcommand_without_a_secret_exits_2() {
    let (code, stdout, stderr) = run_binary(&["token", "--sub", "ann"], &[]);
    assert_eq!(code, Some(2), "stdout {stdout:?} stderr {stderr:?}");
    assert_eq!(stdout, "", "no token");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr:?}");
    assert!(
        lines[0].to_ascii_lowercase().contains("secret"),
        "the line says what is missing: {stderr:?}"
    );
    // The same command with a secret works: the secret is what was missing.
    let secret = fixture_arg(SECRET_FILE);
    let (code, stdout, stderr) = run_binary(
        &["token", "--sub", "ann", "--auth-jwt-secret", &secret],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(peek_claims(stdout.trim())["sub"], "ann");
}

// ---------------------------------------------------------------------------------------------
// Start-up checks

/// Starts the server with these flags (and env); it must exit 2 with one line naming `file`.
fn assert_refuses_to_start(args: &[&str], env: &[(&str, &str)], file: &str) {
    let static_dir = project_static_dir();
    let mut all = vec![
        "--bind",
        "127.0.0.1:0",
        "--static-dir",
        static_dir.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_binary(&all, env);
    assert_eq!(
        code,
        Some(2),
        "{args:?} {env:?}: stdout {stdout:?} stderr {stderr:?}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?} {env:?}: one line, got {stderr:?}");
    assert!(
        lines[0].contains(file),
        "{args:?} {env:?}: the line names {file}: {stderr:?}"
    );
}

#[test]
fn a_missing_or_bad_key_file_stops_the_server_with_2() {
    let dir = TempDir::new("access-keys");
    let missing = dir.path().join("no-such-key.pem");
    let missing = missing.to_str().unwrap();
    let not_a_key = dir.path().join("not-a-key.pem");
    std::fs::File::create(&not_a_key)
        .unwrap()
        .write_all(b"-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n")
        .unwrap();
    let not_a_key = not_a_key.to_str().unwrap();
    let not_pem = fixture_arg("README.md");
    let a_directory = dir.arg();

    assert_refuses_to_start(&["--auth-jwt-secret", missing], &[], missing);
    assert_refuses_to_start(&["--auth-jwt-secret", a_directory], &[], a_directory);
    assert_refuses_to_start(&["--auth-jwt-public-key", missing], &[], missing);
    assert_refuses_to_start(&["--auth-jwt-public-key", not_a_key], &[], not_a_key);
    assert_refuses_to_start(&["--auth-jwt-public-key", &not_pem], &[], &not_pem);
    // A good secret does not save a bad public key.
    let secret = fixture_arg(SECRET_FILE);
    assert_refuses_to_start(
        &[
            "--auth-jwt-secret",
            &secret,
            "--auth-jwt-public-key",
            missing,
        ],
        &[],
        missing,
    );
    assert_refuses_to_start(
        &[],
        &[("SWITCHBOARD_AUTH_JWT_PUBLIC_KEY", missing)],
        missing,
    );
    assert_refuses_to_start(&[], &[("SWITCHBOARD_AUTH_JWT_SECRET", missing)], missing);
    let config = dir.path().join("switchboard.json");
    std::fs::write(&config, json!({"auth-jwt-secret": missing}).to_string()).unwrap();
    assert_refuses_to_start(&["--config", config.to_str().unwrap()], &[], missing);
}

// ---------------------------------------------------------------------------------------------
// Without any access flag

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_access_flags_everything_is_as_before() {
    bounded(async {
        let server = Server::start(&[]);
        // A token in the URL is nobody's business.
        let mut ann = ChatClient::connect_path(server.addr, "/?token=garbage").await;
        let mut bob = ChatClient::connect(server.addr).await;
        assert_eq!(
            ann.join("private:x", "ann").await["members"],
            json!(["ann"])
        );
        let joined = bob.join("private:x", "bob").await;
        assert_eq!(joined["members"], json!(["ann", "bob"]));
        ann.next_of("presence").await;

        // Nick changes work.
        ann.send(json!({"type": "nick", "nick": "anna"})).await;
        assert_eq!(
            bob.next().await,
            json!({"type": "nick", "room": "private:x", "old": "ann", "new": "anna"})
        );
        // Refresh means nothing without tokens.
        let token = hs256(&claims("ann"));
        bob.send(json!({"type": "refresh", "token": token})).await;
        bob.expect_error("forbidden").await;
        bob.assert_usable("private:x").await;

        // Mirror instances named private: are ordinary.
        RawWs::connect_with(
            server.addr,
            "/?mirror=private:x",
            &[("Sec-WebSocket-Protocol", "lws-mirror-protocol")],
        )
        .await;
        assert_refused_count(&server, "token", 0.0).await;
    })
    .await;
}

/// The next text message of a library client (pings skipped).
async fn next_text(ws: &mut Ws) -> String {
    loop {
        match timeout(ANSWER, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}
