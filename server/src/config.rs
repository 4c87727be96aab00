//! The one `Config`: every flag, each also read from a `SWITCHBOARD_<NAME>` env var.
//!
//! It is built once at start-up and shared read-only. Sizes and durations go through
//! `crate::units` so that every flag accepts both plain numbers and units.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use switchboard_actors::{deflate::Compression, ProtocolSettings, SlowConsumerPolicy};

use crate::{
    access::origin::OriginPolicy,
    config_file,
    units::{parse_bytes, parse_duration, parse_usize_bytes},
};

/// Switchboard: a WebSocket + HTTP server for chat and live-broadcast backends.
///
/// Every flag can also be given as an environment variable named SWITCHBOARD_<FLAG>, e.g.
/// SWITCHBOARD_BIND=0.0.0.0:7681. Sizes accept plain bytes or units (64KiB, 16MiB); durations
/// accept plain seconds or units (500ms, 2m).
#[derive(Debug, Clone, Parser)]
#[command(name = "switchboard", version, about, long_about)]
pub struct Config {
    /// Address to listen on (port 0 picks a free port; the bound address is logged).
    #[arg(long, env = "SWITCHBOARD_BIND", default_value = "127.0.0.1:7681")]
    pub bind: SocketAddr,

    /// Worker threads, each with its own connections and registry shard [default: number of cores].
    #[arg(long, env = "SWITCHBOARD_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Directory served over HTTP (relative to the working directory).
    #[arg(long, env = "SWITCHBOARD_STATIC_DIR", default_value = "./static")]
    pub static_dir: PathBuf,

    /// Value of the Cache-Control header on static files.
    #[arg(
        long,
        env = "SWITCHBOARD_CACHE_CONTROL",
        default_value = "public, max-age=60"
    )]
    pub cache_control: String,

    /// Log level (error, warn, info, debug, trace); RUST_LOG wins when set.
    #[arg(long, env = "SWITCHBOARD_LOG_LEVEL", default_value = "info")]
    pub log_level: LogLevel,

    /// WebSocket protocol used when the client offers none in Sec-WebSocket-Protocol.
    #[arg(long, env = "SWITCHBOARD_DEFAULT_PROTOCOL", default_value = "echo")]
    pub default_protocol: String,

    /// Largest WebSocket message, after reassembling fragments; larger ones close with 1009.
    #[arg(long, env = "SWITCHBOARD_MAX_MESSAGE_SIZE", default_value = "16MiB", value_parser = parse_usize_bytes)]
    pub max_message_size: usize,

    /// permessage-deflate (RFC 7692): on, it is negotiated with clients that offer it; off,
    /// every offer is declined.
    #[arg(long, env = "SWITCHBOARD_COMPRESSION", default_value = "on")]
    pub compression: OnOff,

    /// With compression negotiated, messages shorter than this go out uncompressed.
    #[arg(long, env = "SWITCHBOARD_COMPRESS_MIN", default_value = "128", value_parser = parse_usize_bytes)]
    pub compress_min: usize,

    /// Bytes a connection may have queued for its socket before the slow-consumer policy applies.
    #[arg(long, env = "SWITCHBOARD_MAX_BACKLOG", default_value = "1MiB", value_parser = parse_usize_bytes)]
    pub max_backlog: usize,

    /// What happens to a connection over --max-backlog: close it with 1008 "slow consumer", or
    /// drop broadcast messages for it until it drains.
    #[arg(long, env = "SWITCHBOARD_SLOW_CONSUMER", default_value = "close")]
    pub slow_consumer: SlowConsumerArg,

    /// Interval between the server's WebSocket pings.
    #[arg(long, env = "SWITCHBOARD_PING_INTERVAL", default_value = "30", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// A WebSocket peer silent for this long is closed (1001 "idle timeout").
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT", default_value = "120", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// How long a closing WebSocket may take to finish the close handshake before its TCP
    /// connection is ended anyway.
    #[arg(long, env = "SWITCHBOARD_CLOSE_TIMEOUT", default_value = "5", value_parser = parse_duration)]
    pub close_timeout: Duration,

    /// Under heavy load (a worker delivering over 100,000 broadcast frames a second, until a
    /// second after that stops), a worker writes broadcasts to each socket once per this window,
    /// so that the messages arriving within it share one write. Below that load every broadcast
    /// is written at the end of the event-loop turn that queued it. 0: always. At most 1s
    /// (a bare number is seconds, so `10` is refused: `10ms` is meant).
    #[arg(long, env = "SWITCHBOARD_WRITE_COALESCE", default_value = "10ms", value_parser = parse_write_window)]
    pub write_coalesce: Duration,

    /// dumb-increment-protocol: interval between counter messages.
    #[arg(long, env = "SWITCHBOARD_INCREMENT_INTERVAL", default_value = "50ms", value_parser = parse_duration)]
    pub increment_interval: Duration,

    /// chat: messages each room keeps, so a client that reconnects gets what it missed.
    #[arg(long, env = "SWITCHBOARD_HISTORY", default_value = "100")]
    pub history: usize,

    /// chat: longest message text.
    #[arg(long, env = "SWITCHBOARD_CHAT_MAX_TEXT", default_value = "4KiB", value_parser = parse_usize_bytes)]
    pub chat_max_text: usize,

    /// chat: longest nickname, in characters.
    #[arg(long, env = "SWITCHBOARD_CHAT_MAX_NICK", default_value = "32")]
    pub chat_max_nick: usize,

    /// chat: rooms one connection may be in at once.
    #[arg(long, env = "SWITCHBOARD_CHAT_MAX_ROOMS", default_value = "16")]
    pub chat_max_rooms: usize,

    /// chat: sustained messages per second per connection.
    #[arg(long, env = "SWITCHBOARD_CHAT_RATE", default_value = "20", value_parser = parse_positive_rate)]
    pub chat_rate: f64,

    /// Most WebSocket sessions open at once; beyond it an upgrade gets 503 with Retry-After
    /// [default: derived from the file-descriptor limit].
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// On SIGTERM/SIGINT, how long WebSockets get to close (after 1001 "going away") before the
    /// server exits anyway.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_TIMEOUT", default_value = "30", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Path of the liveness check (200 while the process runs).
    #[arg(long, env = "SWITCHBOARD_HEALTH_PATH", default_value = "/healthz", value_parser = parse_path)]
    pub health_path: String,

    /// Path of the readiness check (503 while draining).
    #[arg(long, env = "SWITCHBOARD_READY_PATH", default_value = "/readyz", value_parser = parse_path)]
    pub ready_path: String,

    /// Path of the Prometheus metrics.
    #[arg(long, env = "SWITCHBOARD_METRICS_PATH", default_value = "/metrics", value_parser = parse_path)]
    pub metrics_path: String,

    /// Path of the JSON status document.
    #[arg(long, env = "SWITCHBOARD_STATUS_PATH", default_value = "/status", value_parser = parse_path)]
    pub status_path: String,

    /// Serve the metrics on this separate address instead of the main one.
    #[arg(long, env = "SWITCHBOARD_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,

    /// JSON file with the same keys as the flags (e.g. {"bind": "0.0.0.0:7681",
    /// "max-backlog": "2MiB"}); flags and env vars win over it.
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Run in the background: fork, detach from the terminal, log to --log-file.
    #[arg(long, env = "SWITCHBOARD_DAEMON")]
    pub daemon: bool,

    /// Write the server's PID here and hold a lock on it: a second server with the same pid
    /// file refuses to start.
    #[arg(long, env = "SWITCHBOARD_PID_FILE")]
    pub pid_file: Option<PathBuf>,

    /// Append the log to this file instead of standard error.
    #[arg(long, env = "SWITCHBOARD_LOG_FILE")]
    pub log_file: Option<PathBuf>,

    /// Directory where `POST /upload` stores files; uploads are off when unset.
    #[arg(long, env = "SWITCHBOARD_UPLOAD_DIR")]
    pub upload_dir: Option<PathBuf>,

    /// Largest upload request body; larger → 413 and the partial files are removed.
    #[arg(long, env = "SWITCHBOARD_MAX_UPLOAD", default_value = "4GiB", value_parser = parse_bytes)]
    pub max_upload: u64,

    /// Bearer token of `POST /api/publish`; the endpoint is off when unset.
    #[arg(long, env = "SWITCHBOARD_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Largest `POST /api/publish` body; larger → 413.
    #[arg(long, env = "SWITCHBOARD_MAX_PUBLISH_BODY", default_value = "1MiB", value_parser = parse_bytes)]
    pub max_publish_body: u64,

    /// Largest request head (request line and headers); larger → 431.
    #[arg(long, env = "SWITCHBOARD_MAX_HEAD", default_value = "16KiB", value_parser = parse_usize_bytes)]
    pub max_head: usize,

    /// A client must send its whole request head within this time, or gets 408 and is closed.
    #[arg(long, env = "SWITCHBOARD_HEAD_TIMEOUT", default_value = "10", value_parser = parse_duration)]
    pub head_timeout: Duration,

    /// A request body that makes no progress for this long gets 408.
    #[arg(long, env = "SWITCHBOARD_BODY_TIMEOUT", default_value = "60", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// An idle keep-alive HTTP connection is closed after this long (0: no keep-alive).
    #[arg(long, env = "SWITCHBOARD_KEEP_ALIVE", default_value = "5", value_parser = parse_duration)]
    pub keep_alive: Duration,

    /// Run as one node of a cluster through this Redis (redis://HOST:PORT[/DB]); unset: a single
    /// node with everything in memory.
    #[arg(long, env = "SWITCHBOARD_BROKER")]
    pub broker: Option<String>,

    /// This node's name in the cluster (presence, logs) [default: random, logged at start].
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: Option<String>,

    /// Cluster: a node that stops without saying goodbye has its chat members leave within this
    /// time.
    #[arg(long, env = "SWITCHBOARD_PRESENCE_TTL", default_value = "30", value_parser = parse_duration)]
    pub presence_ttl: Duration,

    /// Cluster: how often each node checks end to end that its broker subscription still
    /// delivers (it reconnects when the check fails).
    #[arg(long, env = "SWITCHBOARD_BROKER_CHECK_INTERVAL", default_value = "5", value_parser = parse_duration)]
    pub broker_check_interval: Duration,

    /// chat: messages a connection may send in a burst above --chat-rate.
    #[arg(long, env = "SWITCHBOARD_CHAT_BURST", default_value = "40", value_parser = parse_positive_rate)]
    pub chat_burst: f64,

    /// Web pages allowed to open WebSockets: comma-separated origins (https://chat.example.com),
    /// patterns (*.example.com) or *. Unset: pages of the request's own host only. A handshake
    /// without an Origin header (not a browser) is always allowed.
    #[arg(long, env = "SWITCHBOARD_ALLOWED_ORIGINS", value_parser = parse_origins)]
    pub allowed_origins: Option<OriginPolicy>,

    /// File holding the HS256 secret of connection tokens (JWT). With it (or
    /// --auth-jwt-public-key), every WebSocket must present a valid token.
    #[arg(long, env = "SWITCHBOARD_AUTH_JWT_SECRET")]
    pub auth_jwt_secret: Option<PathBuf>,

    /// PEM public key of connection tokens: RSA (RS256) or EC P-256 (ES256).
    #[arg(long, env = "SWITCHBOARD_AUTH_JWT_PUBLIC_KEY")]
    pub auth_jwt_public_key: Option<PathBuf>,

    /// PEM certificate chain (leaf first): with --tls-key, the listener speaks TLS (https and
    /// wss on the same port). SIGHUP reloads both files.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SWITCHBOARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

fn parse_origins(text: &str) -> Result<OriginPolicy, String> {
    text.parse()
}

/// An HTTP path for a built-in endpoint: absolute, no query.
fn parse_path(text: &str) -> Result<String, String> {
    if text.starts_with('/') && !text.contains(['?', '#', ' ']) {
        Ok(text.to_owned())
    } else {
        Err(format!("`{text}` is not an absolute path like /healthz"))
    }
}

/// The longest write window: a message may wait up to one and a half windows for its write, so
/// a window of seconds would hold every broadcast that long (a bare `10` is ten seconds). The
/// hub builder caps its window at the same.
pub(crate) const MAX_WRITE_WINDOW: Duration = Duration::from_secs(1);

/// `--write-coalesce`: a duration of at most [`MAX_WRITE_WINDOW`].
fn parse_write_window(text: &str) -> Result<Duration, String> {
    let window = parse_duration(text)?;
    if window > MAX_WRITE_WINDOW {
        return Err(format!(
            "`{text}` is {window:?}: a write window is at most 1s (milliseconds are written `10ms`)"
        ));
    }
    Ok(window)
}

/// A rate or burst: a positive, finite number.
fn parse_positive_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
        _ => Err(format!("`{text}` is not a positive number")),
    }
}

/// Log levels accepted by `--log-level`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// `--slow-consumer` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SlowConsumerArg {
    Close,
    Drop,
}

impl From<SlowConsumerArg> for SlowConsumerPolicy {
    fn from(arg: SlowConsumerArg) -> Self {
        match arg {
            SlowConsumerArg::Close => SlowConsumerPolicy::Close,
            SlowConsumerArg::Drop => SlowConsumerPolicy::Drop,
        }
    }
}

/// `--compression` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl Config {
    /// How the server compresses for peers that negotiated permessage-deflate; `None`: it
    /// negotiates it with nobody (`--compression off`).
    pub fn compression(&self) -> Option<Compression> {
        (self.compression == OnOff::On).then_some(Compression {
            min_size: self.compress_min,
        })
    }

    /// Parses the command line, the environment and the `--config` file (in that order of
    /// precedence, over the defaults). Help and version print and exit 0; any other problem
    /// prints one line naming the flag or key and exits 2.
    pub fn from_args() -> Config {
        let fail = |message: String| -> ! {
            eprintln!("switchboard: {message}");
            std::process::exit(2);
        };
        let mut command = Config::command();
        if let Some(path) = config_file::requested_path() {
            command =
                config_file::apply(command, &path).unwrap_or_else(|err| fail(err.to_string()));
        }
        let parsed = command
            .try_get_matches()
            .and_then(|mut matches| Config::from_arg_matches_mut(&mut matches));
        match parsed {
            Ok(config) => config,
            Err(err) => {
                use clap::error::ErrorKind;
                if matches!(
                    err.kind(),
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
                ) {
                    err.exit();
                }
                let rendered = err.render().to_string();
                let first_line = rendered.lines().next().unwrap_or("invalid arguments");
                fail(first_line.trim_start_matches("error: ").to_owned())
            }
        }
    }

    /// Settings handed to the protocol plug-ins.
    pub fn protocol_settings(&self) -> ProtocolSettings {
        ProtocolSettings {
            increment_interval: self.increment_interval.max(Duration::from_millis(1)),
            chat_history: self.history,
            chat_max_text: self.chat_max_text,
            chat_max_nick: self.chat_max_nick,
            chat_max_rooms: self.chat_max_rooms,
            chat_rate: self.chat_rate,
            chat_burst: self.chat_burst,
            // Set by the handshake, which loads the keys.
            tokens: None,
        }
    }

    /// Worker threads to run: the flag, or one per core.
    pub fn worker_count(&self) -> usize {
        self.workers.map(usize::from).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}
