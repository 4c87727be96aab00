//! Helpers for the WebSocket tests: library clients (`tokio-tungstenite`) that join a protocol
//! and wait until the server's session runs, and views of the server's TCP sockets from /proc.

use std::{net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpStream, time::timeout};
use tokio_tungstenite::{
    tungstenite::{
        client::IntoClientRequest, handshake::client::Request, http::HeaderValue,
        protocol::WebSocketConfig, Message,
    },
    MaybeTlsStream, WebSocketStream,
};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `path` offering `protocol` (if any), and waits until the server's session for
/// the connection runs: it answers a ping only then, so by the time this returns, the session
/// has joined whatever its protocol joins on open. Panics after 30 s.
pub async fn connect_ready(addr: SocketAddr, path: &str, protocol: Option<&str>) -> Ws {
    let request = handshake_request(&format!("ws://{addr}{path}"), protocol);
    let (mut ws, response) = timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async_with_config(request, Some(client_config()), false),
    )
    .await
    .expect("connect within 30 s")
    .expect("connect");
    if let Some(protocol) = protocol {
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|value| value.to_str().ok()),
            Some(protocol)
        );
    }
    wait_until_ready(&mut ws).await;
    ws
}

/// The handshake request for `url`, offering `protocol` (if any).
pub fn handshake_request(url: &str, protocol: Option<&str>) -> Request {
    let mut request = url.into_client_request().unwrap();
    if let Some(protocol) = protocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocol).unwrap(),
        );
    }
    request
}

/// The tests' client settings: messages and frames up to 32 MiB.
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(32 << 20))
        .max_frame_size(Some(32 << 20))
}

/// Waits until the server's session for the connection runs: it answers a ping only then.
/// Panics after 30 s.
pub async fn wait_until_ready(ws: &mut Ws) {
    ws.send(Message::Ping("ready?".into())).await.expect("ping");
    loop {
        match timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("pong within 30 s")
        {
            Some(Ok(Message::Pong(payload))) if payload == "ready?" => return,
            Some(Ok(Message::Pong(_) | Message::Ping(_))) => {}
            other => panic!("expected the pong, got {other:?}"),
        }
    }
}

/// Joins an instance of `lws-mirror-protocol` (`None`: no `?mirror`, the default instance).
pub async fn join_mirror(addr: SocketAddr, instance: Option<&str>) -> Ws {
    let path = match instance {
        Some(name) => format!("/?mirror={name}"),
        None => "/".to_owned(),
    };
    connect_ready(addr, &path, Some("lws-mirror-protocol")).await
}

/// Raises this process's soft open-file limit towards `wanted`; returns the limit in force.
pub fn raise_fd_limit(wanted: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < wanted {
            let raised = libc::rlimit {
                rlim_cur: wanted.min(limit.rlim_max),
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
        limit.rlim_cur
    }
}

/// The resident set size of a process in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One server-side TCP connection, from /proc/net/tcp.
#[derive(Debug, Clone, Copy)]
pub struct ServerSocket {
    /// The client's port.
    pub peer_port: u16,
    /// The kernel's state number (1 established, 4 FIN_WAIT1, 6 TIME_WAIT, 7 CLOSE, 8 CLOSE_WAIT...).
    pub state: u8,
    /// Bytes written by the server and not yet acknowledged by the client.
    pub tx_queue: u64,
    /// Whether a process still holds the socket (a closed socket still draining has inode 0).
    pub open: bool,
}

/// The connections on the server's port (IPv4), as the kernel sees them. Includes sockets the
/// server has already closed but whose unsent data or FIN is still pending (`open == false`).
pub fn server_sockets(server_pid: u32, server_port: u16) -> Vec<ServerSocket> {
    let table = std::fs::read_to_string(format!("/proc/{server_pid}/net/tcp")).unwrap_or_default();
    let port_of = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || port_of(fields[1])? != server_port {
                return None;
            }
            let state = u8::from_str_radix(fields[3], 16).ok()?;
            if state == 0x0A {
                return None; // the listening socket
            }
            let tx_queue = u64::from_str_radix(fields[4].split(':').next()?, 16).ok()?;
            Some(ServerSocket {
                peer_port: port_of(fields[2])?,
                state,
                tx_queue,
                open: fields[9] != "0",
            })
        })
        .collect()
}

/// The server's socket for the client whose local port is `client_port`, if it still has one.
pub fn server_socket_for(
    server_pid: u32,
    server_port: u16,
    client_port: u16,
) -> Option<ServerSocket> {
    server_sockets(server_pid, server_port)
        .into_iter()
        .find(|socket| socket.peer_port == client_port)
}

/// A broadcast test's message tag, "sender-I seq-N" → (I, N).
pub fn parse_tag(text: &str) -> Option<(usize, usize)> {
    let (sender, seq) = text.split_once(' ')?;
    Some((
        sender.strip_prefix("sender-")?.parse().ok()?,
        seq.strip_prefix("seq-")?.parse().ok()?,
    ))
}

/// Waits until the server no longer holds an open socket for the client at `client_port`;
/// panics if it still does `limit` after `since` (the message names `what` was held). Returns
/// how long after `since` the server let go.
pub async fn wait_until_server_lets_go(
    server_pid: u32,
    server_port: u16,
    client_port: u16,
    since: std::time::Instant,
    limit: Duration,
    what: &str,
) -> Duration {
    while server_socket_for(server_pid, server_port, client_port).is_some_and(|socket| socket.open)
    {
        assert!(
            since.elapsed() < limit,
            "the server still holds {what} {limit:?} later"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    since.elapsed()
}
