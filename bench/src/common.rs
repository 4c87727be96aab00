//! Shared pieces of the load modes: the loopback-only target, connecting, the clock, latency
//! histograms, and the process's file-descriptor limit.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde_json::{Map, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{client_async_tls_with_config, Connector, MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket URL whose host is a literal address in 127.0.0.0/8 (or `localhost`).
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    /// `wss://`: TLS, verified against `--ca-cert`.
    pub tls: bool,
}

impl Target {
    /// Parses `ws[s]://HOST[:PORT][/PATH][?QUERY]`, refusing anything that is not loopback.
    pub fn parse(url: &str) -> Result<Target> {
        let (rest, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => bail!("{url}: only ws:// and wss:// URLs are supported"),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            bail!("{url}: user information in the URL is not supported");
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .with_context(|| format!("{url}: bad port {port:?}"))?,
            ),
            None => (authority, if tls { 443 } else { 80 }),
        };
        let ip: Ipv4Addr = if host.eq_ignore_ascii_case("localhost") {
            Ipv4Addr::LOCALHOST
        } else {
            host.parse().with_context(|| {
                format!("{url}: the host must be a literal 127.x.y.z address or localhost")
            })?
        };
        if !ip.is_loopback() {
            bail!(
                "{url}: refusing a non-loopback address ({ip}); this tool only loads 127.0.0.0/8"
            );
        }
        let mut url = url.to_string();
        if !rest.contains('/') {
            // `ws://host:port?x` and `ws://host:port` both need a path for the request line.
            match url.find('?') {
                Some(q) => url.insert(q, '/'),
                None => url.push('/'),
            }
        }
        Ok(Target {
            url,
            addr: SocketAddr::V4(SocketAddrV4::new(ip, port)),
            tls,
        })
    }

    /// The same target with `name=value` added to the query string.
    pub fn with_query(&self, name: &str, value: &str) -> Target {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        Target {
            url: format!("{}{sep}{name}={value}", self.url),
            addr: self.addr,
            tls: self.tls,
        }
    }
}

/// The `--protocol` value `none` means: offer no `Sec-WebSocket-Protocol` at all.
pub fn protocol_option(protocol: &str) -> Option<&str> {
    match protocol {
        "" | "none" => None,
        p => Some(p),
    }
}

pub fn ws_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// Opens one WebSocket connection (TCP_NODELAY on, like the servers under test), optionally from a
/// given loopback source address, all within `timeout`.
pub async fn connect(
    target: &Target,
    protocol: Option<&str>,
    source: Option<Ipv4Addr>,
    config: WebSocketConfig,
    timeout: Duration,
) -> Result<Ws> {
    connect_offering(target, protocol, None, source, config, timeout).await
}

/// [`connect`], offering `extensions` in `Sec-WebSocket-Extensions`. The client cannot read
/// compressed messages: for connections that stay idle (pings are never compressed).
pub async fn connect_offering(
    target: &Target,
    protocol: Option<&str>,
    extensions: Option<&str>,
    source: Option<Ipv4Addr>,
    config: WebSocketConfig,
    timeout: Duration,
) -> Result<Ws> {
    let attempt = async {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::V4(SocketAddrV4::new(ip, 0)))?;
        }
        let stream = socket.connect(target.addr).await.context("TCP connect")?;
        stream.set_nodelay(true)?;
        let mut request = target.url.as_str().into_client_request()?;
        if let Some(p) = protocol {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p)?);
        }
        if let Some(offer) = extensions {
            request
                .headers_mut()
                .insert("Sec-WebSocket-Extensions", HeaderValue::from_str(offer)?);
        }
        let connector = if target.tls {
            crate::tls::connector()?
        } else {
            Connector::Plain
        };
        let (ws, _response) =
            client_async_tls_with_config(request, stream, Some(config), Some(connector))
                .await
                .context("WebSocket handshake")?;
        anyhow::Ok(ws)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => bail!("connect timed out after {timeout:?}"),
    }
}

/// Opens `n` connections, at most `concurrency` handshakes at a time. Fails on the first error.
pub async fn connect_many(
    target: &Target,
    protocol: Option<&str>,
    n: usize,
    concurrency: usize,
    config: WebSocketConfig,
    timeout: Duration,
) -> Result<Vec<Ws>> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    let protocol = protocol.map(str::to_string);
    stream::iter(0..n)
        .map(|i| {
            let protocol = protocol.clone();
            async move {
                connect(target, protocol.as_deref(), None, config, timeout)
                    .await
                    .with_context(|| format!("connection {i} of {n} to {}", target.url))
            }
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Starts the process clock; call once early.
pub fn init_clock() {
    let _ = epoch();
}

/// Nanoseconds since the process clock started (monotonic).
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// The process-clock reading of an `Instant`.
pub fn instant_ns(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_nanos() as u64
}

/// Latencies in microseconds, 1 µs to 100 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// Latency samples recorded by many tasks into one histogram per thread (and per slot), merged at
/// the end.
///
/// A histogram covering 1 µs to 100 s at 3 digits is about 200 KiB of counters; one per
/// subscriber (a thousand of them) misses the cache on every sample and made recording the
/// client's largest cost. One per thread stays hot. A slot separates samples that are reported
/// apart (the broadcast mode keeps one slot per server URL); most loads use slot 0 only.
pub mod thread_histograms {
    use std::cell::RefCell;
    use std::sync::{Arc, Mutex};

    use hdrhistogram::Histogram;

    type Shared = Arc<Mutex<Histogram<u64>>>;

    /// Every thread's histograms, with their slot.
    static ALL: Mutex<Vec<(usize, Shared)>> = Mutex::new(Vec::new());

    thread_local! {
        static LOCAL: RefCell<Vec<Option<Shared>>> = const { RefCell::new(Vec::new()) };
    }

    /// Records samples (µs) into this thread's histogram of `slot`; one lock per call,
    /// uncontended.
    pub fn record(slot: usize, samples: &[u64]) {
        if samples.is_empty() {
            return;
        }
        LOCAL.with(|local| {
            let mut local = local.borrow_mut();
            if local.len() <= slot {
                local.resize(slot + 1, None);
            }
            let hist = local[slot].get_or_insert_with(|| {
                let hist = Arc::new(Mutex::new(super::new_histogram()));
                ALL.lock()
                    .expect("histogram list")
                    .push((slot, hist.clone()));
                hist
            });
            let mut hist = hist.lock().expect("thread histogram");
            for &sample in samples {
                hist.saturating_record(sample);
            }
        });
    }

    /// Everything recorded so far in `slot` (every slot if `None`), on every thread.
    pub fn merged(slot: Option<usize>) -> Histogram<u64> {
        let mut total = super::new_histogram();
        for (s, hist) in ALL.lock().expect("histogram list").iter() {
            if slot.is_none_or(|slot| slot == *s) {
                total
                    .add(&*hist.lock().expect("thread histogram"))
                    .expect("same bounds");
            }
        }
        total
    }
}

/// Adds `p50_ms`, `p99_ms`, `p999_ms`, `max_ms`, `mean_ms` (prefixed) to a JSON object; null
/// when there are no samples.
pub fn latency_fields(out: &mut Map<String, Value>, prefix: &str, h: &Histogram<u64>) {
    let ms = |us: u64| Value::from(round3(us as f64 / 1000.0));
    let figures = [
        ("p50_ms", h.value_at_quantile(0.50)),
        ("p99_ms", h.value_at_quantile(0.99)),
        ("p999_ms", h.value_at_quantile(0.999)),
        ("max_ms", h.max()),
    ];
    for (name, us) in figures {
        let v = if h.is_empty() { Value::Null } else { ms(us) };
        out.insert(format!("{prefix}{name}"), v);
    }
    let mean = if h.is_empty() {
        Value::Null
    } else {
        Value::from(round3(h.mean() / 1000.0))
    };
    out.insert(format!("{prefix}mean_ms"), mean);
}

pub fn latency_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".to_string();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  ({} samples)",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        h.len()
    )
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        let mut target = limit.rlim_max;
        if target == libc::RLIM_INFINITY {
            target = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(1 << 20);
        }
        if limit.rlim_cur < target {
            let raised = libc::rlimit {
                rlim_cur: target,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return target;
            }
        }
        limit.rlim_cur
    }
}

/// VmRSS of a process, in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// CPU time (user + system) this process has used, in seconds.
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct passed to it; all-zero is a valid rusage.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0.0;
        }
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Prints the final machine-readable line (with the client's own CPU time added).
pub fn print_json(mut fields: Map<String, Value>) {
    fields.insert("client_cpu_s".into(), round3(own_cpu_seconds()).into());
    println!("{}", Value::Object(fields));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(Target::parse("ws://127.0.0.1:7681/").is_ok());
        assert!(Target::parse("ws://127.3.4.5:1/x?y=1").is_ok());
        assert_eq!(
            Target::parse("ws://localhost:9").unwrap().url,
            "ws://localhost:9/"
        );
        assert_eq!(
            Target::parse("ws://127.0.0.1:9?mirror=a").unwrap().url,
            "ws://127.0.0.1:9/?mirror=a"
        );
        assert!(Target::parse("ws://10.0.0.1:7681/").is_err());
        assert!(Target::parse("ws://example.com/").is_err());
        let secure = Target::parse("wss://127.0.0.1").unwrap();
        assert!(secure.tls && secure.addr.port() == 443 && secure.url == "wss://127.0.0.1/");
        assert!(Target::parse("wss://10.0.0.1/").is_err());
        assert!(Target::parse("http://127.0.0.1/").is_err());
        assert!(Target::parse("ws://[::1]:80/").is_err());
    }

    #[test]
    fn query_is_appended() {
        let t = Target::parse("ws://127.0.0.1:9/").unwrap();
        assert_eq!(
            t.with_query("mirror", "x").url,
            "ws://127.0.0.1:9/?mirror=x"
        );
        let t = t.with_query("a", "b").with_query("c", "d");
        assert_eq!(t.url, "ws://127.0.0.1:9/?a=b&c=d");
    }
}
