//! `broadcast`: K subscribers and P publishers in one `lws-mirror-protocol` instance.
//!
//! Every payload is text of exactly `--size` bytes, `p<publisher> s<seq> t<ns> xxx…;`, ending in the
//! only `;`. Subscribers concatenate whatever text arrives and split it on `;`, because
//! libwebsockets' test server may split one message into two or join messages. Each subscriber
//! checks that every publisher's sequence numbers only increase, and counts what it missed.
//!
//! Subscribers and publishers may be spread over several servers (the nodes of a cluster):
//! `--subscriber-urls` and `--publisher-urls`, round-robin. A node of a cluster delivers another
//! node's broadcasts only once its subscription to the instance is active, so before the clock
//! starts the first publisher sends readiness records (`r<publisher> s<n> t<ns> xxx…;`, the same
//! size) until every subscriber has received one. Those records are not counted anywhere else,
//! and the warm-up and the measured window come after them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::stream::{SplitSink, SplitStream, StreamExt};
use futures_util::SinkExt;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, OpCode};

use crate::common::{self, Target, Ws};
use crate::frames::FrameReader;
use crate::Common;

/// Most messages a publisher queues before flushing them.
const BATCH: u64 = 64;

#[derive(clap::Args, Debug, Clone)]
pub struct BroadcastArgs {
    /// Subscribers (members that only read)
    #[arg(short = 'k', long, default_value_t = 100)]
    pub subscribers: usize,
    /// Publishers (members that send; they also receive, and drain, every message)
    #[arg(short = 'p', long, default_value_t = 1)]
    pub publishers: usize,
    /// Total messages per second over all publishers; without it, send as fast as --max-lag allows
    #[arg(long)]
    pub rate: Option<f64>,
    /// Publishers pause while the slowest subscriber is this many messages behind
    #[arg(long, default_value_t = 1000)]
    pub max_lag: u64,
    /// Payload size in bytes (text, ends with ';')
    #[arg(short = 's', long, default_value_t = 64)]
    pub size: usize,
    /// WebSocket subprotocol to offer
    #[arg(long, default_value = "lws-mirror-protocol")]
    pub protocol: String,
    /// Mirror instance (`?mirror=NAME`); default: a name unique to this run
    #[arg(long)]
    pub mirror: Option<String>,
    /// After the last send, a subscriber waits for the rest of its messages until it has gone
    /// this many seconds without receiving anything
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
    /// ... and in any case no longer than this many seconds after the last send
    #[arg(long, default_value_t = 30.0)]
    pub drain_max: f64,
    /// Servers the subscribers connect to, round-robin (comma-separated ws:// URLs, loopback
    /// only); default: --url
    #[arg(long, value_delimiter = ',')]
    pub subscriber_urls: Vec<String>,
    /// Servers the publishers connect to, round-robin (comma-separated); default: --url. The
    /// readiness records come from the first publisher.
    #[arg(long, value_delimiter = ',')]
    pub publisher_urls: Vec<String>,
    /// Before the clock starts, wait at most this many seconds for every subscriber to receive a
    /// readiness record (on a cluster: until every node's subscription is active)
    #[arg(long, default_value_t = 10.0)]
    pub ready_timeout: f64,
}

impl BroadcastArgs {
    fn ready_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.ready_timeout.clamp(0.001, 3600.0))
    }

    pub fn time_bound(&self, common: &Common) -> Duration {
        let n = self.subscribers + self.publishers;
        let batches = n.div_ceil(common.concurrency.max(1)) as u32;
        common.warmup()
            + common.duration()
            + Duration::from_secs_f64(self.drain_max.max(0.0))
            + self.ready_timeout()
            + common.connect_timeout() * (batches + 1)
            + Duration::from_secs(15)
    }
}

struct Shared {
    /// Subscribers that have received a first record (readiness or data).
    ready: AtomicU64,
    /// Set once every subscriber is ready (or waiting for that has failed); until then nothing
    /// is measured.
    clock: OnceLock<Clock>,
    /// Messages sent by all publishers so far.
    sent: AtomicU64,
    /// Per subscriber: messages accounted for (received, or skipped over by a later sequence
    /// number). `u64::MAX` once the subscriber has stopped, so it no longer holds publishers back.
    progress: Vec<AtomicU64>,
    /// Minimum of `progress`, refreshed every millisecond by the watcher.
    min_progress: AtomicU64,
    publishing_done: AtomicBool,
    stop_watcher: AtomicBool,
    caught_up: Notify,
    /// Messages the publishers received back (they are members of the instance too).
    own_copies: Arc<AtomicU64>,
}

#[derive(Default)]
struct PubStats {
    sent: u64,
    sent_measured: u64,
    lag_waits: u64,
    error: Option<String>,
}

#[derive(Default)]
struct SubStats {
    /// Readiness records received (not counted in `records`).
    ready_records: u64,
    records: u64,
    measured: u64,
    in_window: u64,
    order_violations: u64,
    gaps: u64,
    malformed: u64,
    wrong_size: u64,
    error: Option<String>,
    /// The first record that did not parse (or had the wrong size), for diagnosis.
    sample: Option<String>,
}

#[derive(Clone, Copy, Debug)]
struct Clock {
    warm_end_ns: u64,
    end_ns: u64,
    end: Instant,
    /// Hard end of the drain.
    drain_end: Instant,
    /// Quiet time after which a subscriber stops waiting once publishing is over.
    drain_idle_ns: u64,
}

impl Clock {
    fn window(&self) -> Window {
        Window {
            warm_end_ns: self.warm_end_ns,
            end_ns: self.end_ns,
        }
    }
}

/// The part of the clock a subscriber needs for each record.
#[derive(Clone, Copy, Debug)]
struct Window {
    /// Records sent from here on are measured (latency, loss).
    warm_end_ns: u64,
    /// Records received before this count towards deliveries/s.
    end_ns: u64,
}

impl Window {
    /// Before the clock is set: nothing is measured.
    const NOT_YET: Window = Window {
        warm_end_ns: u64::MAX,
        end_ns: u64::MAX,
    };
}

impl SubStats {
    fn add(&mut self, other: &SubStats) {
        self.ready_records += other.ready_records;
        self.records += other.records;
        self.measured += other.measured;
        self.in_window += other.in_window;
        self.order_violations += other.order_violations;
        self.gaps += other.gaps;
        self.malformed += other.malformed;
        self.wrong_size += other.wrong_size;
    }
}

/// Parses the URLs (default: `fallback`), each with `?mirror=NAME` added.
fn targets(urls: &[String], fallback: &str, mirror: &str) -> Result<Vec<Target>> {
    let urls: Vec<&str> = if urls.is_empty() {
        vec![fallback]
    } else {
        urls.iter().map(String::as_str).collect()
    };
    urls.into_iter()
        .map(|url| Ok(Target::parse(url.trim())?.with_query("mirror", mirror)))
        .collect()
}

/// Opens `n` connections, connection `i` to `targets[i % targets.len()]`, returned in that order.
async fn connect_spread(
    targets: &[Target],
    n: usize,
    protocol: Option<&str>,
    common: &Common,
    config: tokio_tungstenite::tungstenite::protocol::WebSocketConfig,
) -> Result<Vec<Ws>> {
    let mut per_target = Vec::new();
    for (g, target) in targets.iter().enumerate() {
        let count = (g..n).step_by(targets.len()).count();
        let conns = common::connect_many(
            target,
            protocol,
            count,
            common.concurrency,
            config,
            common.connect_timeout(),
        )
        .await?;
        per_target.push(conns.into_iter());
    }
    Ok((0..n)
        .filter_map(|i| per_target[i % targets.len()].next())
        .collect())
}

pub async fn run(common: &Common, args: &BroadcastArgs) -> Result<()> {
    if args.publishers == 0 {
        bail!("--publishers must be at least 1");
    }
    let probe = payload(args.publishers - 1, u64::MAX / 2, u64::MAX / 2, 0);
    if args.size < probe.len() {
        bail!(
            "--size {} is too small: payloads need up to {} bytes",
            args.size,
            probe.len()
        );
    }
    if let Some(rate) = args.rate {
        if rate <= 0.0 || !rate.is_finite() {
            bail!("--rate must be positive");
        }
    }
    let mirror = args
        .mirror
        .clone()
        .unwrap_or_else(|| format!("bench{}", std::process::id()));
    let sub_targets = targets(&args.subscriber_urls, &common.url, &mirror)?;
    let pub_targets = targets(&args.publisher_urls, &common.url, &mirror)?;
    let protocol = common::protocol_option(&args.protocol);
    let config = common::ws_config(8 * 1024);

    // Subscribers first: they must be members before anything is published.
    let subs = connect_spread(&sub_targets, args.subscribers, protocol, common, config).await?;
    let pubs = connect_spread(&pub_targets, args.publishers, protocol, common, config).await?;

    let shared = Arc::new(Shared {
        ready: AtomicU64::new(0),
        clock: OnceLock::new(),
        sent: AtomicU64::new(0),
        progress: (0..args.subscribers).map(|_| AtomicU64::new(0)).collect(),
        min_progress: AtomicU64::new(if args.subscribers == 0 { u64::MAX } else { 0 }),
        publishing_done: AtomicBool::new(false),
        stop_watcher: AtomicBool::new(false),
        caught_up: Notify::new(),
        own_copies: Arc::new(AtomicU64::new(0)),
    });
    let ready_start = Instant::now();
    let ready_deadline = ready_start + args.ready_timeout();

    let mut sub_tasks = Vec::new();
    for (i, ws) in subs.into_iter().enumerate() {
        let shared = shared.clone();
        let (publishers, size) = (args.publishers, args.size);
        let group = i % sub_targets.len();
        sub_tasks.push(tokio::spawn(subscriber(
            i,
            group,
            ws,
            shared,
            publishers,
            size,
            ready_deadline,
        )));
    }
    let watcher = tokio::spawn(watch_progress(shared.clone()));
    // The publishers are members too: each drains its own copies so that the server never sees
    // it as a slow consumer.
    let mut sinks = Vec::new();
    let mut readers = Vec::new();
    for ws in pubs {
        let (sink, stream) = ws.split();
        sinks.push(sink);
        readers.push(tokio::spawn(drain_own_copies(
            stream,
            shared.own_copies.clone(),
        )));
    }

    let ready_sent = wait_ready(&mut sinks[0], &shared, args, ready_deadline).await?;
    let ready_ms = ready_start.elapsed().as_secs_f64() * 1e3;

    let start = Instant::now();
    let warm_end = start + common.warmup();
    let end = warm_end + common.duration();
    let clock = Clock {
        warm_end_ns: common::instant_ns(warm_end),
        end_ns: common::instant_ns(end),
        end,
        drain_end: end + Duration::from_secs_f64(args.drain_max.max(0.0)),
        drain_idle_ns: (args.drain.max(0.0) * 1e9) as u64,
    };
    shared
        .clock
        .set(clock)
        .expect("the clock is set once, here");

    let mut pub_tasks = Vec::new();
    for (id, sink) in sinks.into_iter().enumerate() {
        let shared = shared.clone();
        let args = args.clone();
        pub_tasks.push(tokio::spawn(publisher(
            id, sink, shared, args, start, clock,
        )));
    }

    let mut pub_total = PubStats::default();
    let mut pub_sinks = Vec::new();
    let mut first_error: Option<String> = None;
    for task in pub_tasks {
        let (stats, sink) = task.await?;
        pub_total.sent += stats.sent;
        pub_total.sent_measured += stats.sent_measured;
        pub_total.lag_waits += stats.lag_waits;
        if let Some(e) = stats.error {
            pub_total.error.get_or_insert(e.clone());
            first_error.get_or_insert(format!("publisher: {e}"));
        }
        pub_sinks.push(sink);
    }
    shared.publishing_done.store(true, Ordering::Release);

    let mut total = SubStats::default();
    let mut groups: Vec<SubStats> = sub_targets.iter().map(|_| SubStats::default()).collect();
    let mut group_size = vec![0u64; sub_targets.len()];
    let mut failed_subscribers = 0u64;
    let mut first_bad_record: Option<String> = None;
    for (i, task) in sub_tasks.into_iter().enumerate() {
        let mut s = task.await?;
        let g = i % sub_targets.len();
        group_size[g] += 1;
        if first_bad_record.is_none() {
            first_bad_record = s.sample.take();
        }
        if let Some(e) = s.error.take() {
            failed_subscribers += 1;
            first_error.get_or_insert(format!("subscriber: {e}"));
        }
        total.add(&s);
        groups[g].add(&s);
    }
    shared.stop_watcher.store(true, Ordering::Release);
    let hist = common::thread_histograms::merged(None);
    watcher.await?;
    let own_copies = shared.own_copies.load(Ordering::Relaxed);
    for (mut sink, reader) in pub_sinks.into_iter().zip(readers) {
        let _ = tokio::time::timeout(Duration::from_millis(500), sink.close()).await;
        reader.abort();
    }
    let SubStats {
        records,
        measured,
        in_window,
        order_violations,
        gaps,
        malformed,
        wrong_size,
        ..
    } = total;

    let secs = common.duration().as_secs_f64();
    let k = args.subscribers as u64;
    let expected = pub_total.sent_measured * k;
    let loss = expected as i64 - measured as i64;
    let loss_pct = if expected > 0 {
        100.0 * loss as f64 / expected as f64
    } else {
        0.0
    };
    let deliveries = in_window as f64 / secs;
    let publish_rate = pub_total.sent_measured as f64 / secs;
    // Per subscriber server, in --subscriber-urls order. In the JSON line these are arrays
    // under `server_*` keys, so that every top-level key stays unique in the line.
    let per_server: Vec<ServerFigures> = sub_targets
        .iter()
        .enumerate()
        .map(|(g, target)| {
            let s = &groups[g];
            let expected = pub_total.sent_measured * group_size[g];
            ServerFigures {
                server: target.addr.to_string(),
                subscribers: group_size[g],
                deliveries_per_s: s.in_window as f64 / secs,
                loss: expected as i64 - s.measured as i64,
                order_violations: s.order_violations,
                gaps: s.gaps,
                hist: common::thread_histograms::merged(Some(g)),
            }
        })
        .collect();

    println!(
        "broadcast: {} subscribers, {} publishers, {} B text, protocol {}, mirror {:?}, {}; \
         {:.1} s measured after {:.1} s warm-up",
        args.subscribers,
        args.publishers,
        args.size,
        args.protocol,
        mirror,
        match args.rate {
            Some(r) => format!("{r} msg/s in total"),
            None => format!("as fast as allowed (max lag {})", args.max_lag),
        },
        secs,
        common.warmup().as_secs_f64()
    );
    println!(
        "  ready after {ready_ms:.1} ms ({ready_sent} readiness records sent before every \
         subscriber had one)"
    );
    println!("  deliveries/s (to subscribers): {deliveries:.0}");
    println!("  messages published/s: {publish_rate:.1}");
    println!(
        "  latency (send -> subscriber receive): {}",
        common::latency_line(&hist)
    );
    println!(
        "  sent after warm-up x subscribers {expected}, received {measured}, loss {loss} \
         ({loss_pct:.4} %; not received by the end of the drain)"
    );
    println!(
        "  order violations {order_violations}, sequence gaps {gaps} (numbers skipped before a \
         later one arrived: lost for certain)"
    );
    println!(
        "  malformed records {malformed}, wrong-size records {wrong_size}, failed subscribers \
         {failed_subscribers}, publisher pauses for lag {}, publishers' own copies {own_copies}",
        pub_total.lag_waits
    );
    if let Some(e) = &first_error {
        println!("  first error: {e}");
    }
    if let Some(r) = &first_bad_record {
        println!("  first malformed or wrong-size record: {r:?}");
    }
    if sub_targets.len() > 1 || pub_targets.len() > 1 {
        let addrs: Vec<String> = pub_targets.iter().map(|t| t.addr.to_string()).collect();
        println!("  publishers on {}", addrs.join(", "));
        for f in &per_server {
            println!(
                "  subscribers on {}: {}, deliveries/s {:.0}, loss {}, order violations {}, gaps \
                 {}, latency {}",
                f.server,
                f.subscribers,
                f.deliveries_per_s,
                f.loss,
                f.order_violations,
                f.gaps,
                common::latency_line(&f.hist)
            );
        }
    }

    let mut out = Map::new();
    out.insert("mode".into(), "broadcast".into());
    out.insert("subscribers".into(), args.subscribers.into());
    out.insert("publishers".into(), args.publishers.into());
    out.insert("size".into(), args.size.into());
    out.insert(
        "rate".into(),
        args.rate.map(Value::from).unwrap_or(Value::Null),
    );
    out.insert("max_lag".into(), args.max_lag.into());
    out.insert("protocol".into(), args.protocol.clone().into());
    out.insert("duration_s".into(), secs.into());
    out.insert("deliveries_per_s".into(), common::round3(deliveries).into());
    out.insert("deliveries".into(), in_window.into());
    out.insert(
        "published_per_s".into(),
        common::round3(publish_rate).into(),
    );
    out.insert("published".into(), pub_total.sent_measured.into());
    out.insert("published_total".into(), pub_total.sent.into());
    out.insert("expected".into(), expected.into());
    out.insert("received".into(), measured.into());
    out.insert("received_total".into(), records.into());
    out.insert("loss".into(), loss.into());
    out.insert("loss_pct".into(), common::round3(loss_pct).into());
    out.insert("order_violations".into(), order_violations.into());
    out.insert("gaps".into(), gaps.into());
    out.insert("malformed".into(), malformed.into());
    out.insert("wrong_size".into(), wrong_size.into());
    out.insert("failed_subscribers".into(), failed_subscribers.into());
    out.insert("lag_waits".into(), pub_total.lag_waits.into());
    out.insert("publisher_own_copies".into(), own_copies.into());
    out.insert("ready_ms".into(), common::round3(ready_ms).into());
    out.insert("ready_records_sent".into(), ready_sent.into());
    out.insert(
        "publisher_servers".into(),
        pub_targets
            .iter()
            .map(|t| Value::from(t.addr.to_string()))
            .collect::<Vec<_>>()
            .into(),
    );
    let column = |figure: &dyn Fn(&ServerFigures) -> Value| -> Value {
        per_server.iter().map(figure).collect::<Vec<_>>().into()
    };
    let quantile_ms = |f: &ServerFigures, q: f64| -> Value {
        if f.hist.is_empty() {
            Value::Null
        } else {
            common::round3(f.hist.value_at_quantile(q) as f64 / 1000.0).into()
        }
    };
    out.insert("servers".into(), column(&|f| f.server.clone().into()));
    out.insert(
        "server_subscribers".into(),
        column(&|f| f.subscribers.into()),
    );
    out.insert(
        "server_deliveries_per_s".into(),
        column(&|f| common::round3(f.deliveries_per_s).into()),
    );
    out.insert("server_loss".into(), column(&|f| f.loss.into()));
    out.insert(
        "server_order_violations".into(),
        column(&|f| f.order_violations.into()),
    );
    out.insert("server_gaps".into(), column(&|f| f.gaps.into()));
    out.insert("server_p50_ms".into(), column(&|f| quantile_ms(f, 0.50)));
    out.insert("server_p99_ms".into(), column(&|f| quantile_ms(f, 0.99)));
    out.insert("server_p999_ms".into(), column(&|f| quantile_ms(f, 0.999)));
    common::latency_fields(&mut out, "", &hist);
    out.insert(
        "first_error".into(),
        first_error.map(Value::from).unwrap_or(Value::Null),
    );
    out.insert(
        "first_bad_record".into(),
        first_bad_record.map(Value::from).unwrap_or(Value::Null),
    );
    common::print_json(out);
    Ok(())
}

/// What the subscribers connected to one server received.
struct ServerFigures {
    server: String,
    subscribers: u64,
    deliveries_per_s: f64,
    loss: i64,
    order_violations: u64,
    gaps: u64,
    hist: hdrhistogram::Histogram<u64>,
}

/// `p<publisher> s<seq> t<ns> ` padded with `x` to `size` bytes, then `;`.
fn payload(publisher: usize, seq: u64, t_ns: u64, size: usize) -> String {
    let mut s = String::with_capacity(size.max(64));
    use std::fmt::Write;
    let _ = write!(s, "p{publisher} s{seq} t{t_ns} ");
    let pad = size.saturating_sub(s.len() + 1);
    s.extend(std::iter::repeat_n('x', pad));
    s.push(';');
    s
}

/// `r<publisher> s<n> t<ns> ` padded with `x` to `size` bytes, then `;`: a readiness record.
fn ready_payload(publisher: usize, n: u64, t_ns: u64, size: usize) -> String {
    let mut s = payload(publisher, n, t_ns, size);
    s.replace_range(..1, "r");
    s
}

/// Parses a data record (the text before a `;`) into (publisher, seq, send time).
fn parse(record: &[u8]) -> Option<(usize, u64, u64)> {
    parse_as(record, b'p')
}

/// Parses a record whose first field starts with `kind` (`p`: data, `r`: readiness).
fn parse_as(record: &[u8], kind: u8) -> Option<(usize, u64, u64)> {
    /// `<prefix><decimal digits>`, at most 19 digits (always fits a u64).
    fn num(field: &[u8], prefix: u8) -> Option<u64> {
        let digits = field.strip_prefix(&[prefix])?;
        if digits.is_empty() || digits.len() > 19 {
            return None;
        }
        digits.iter().try_fold(0u64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
        })
    }
    let mut fields = record.split(|&b| b == b' ');
    let p = usize::try_from(num(fields.next()?, kind)?).ok()?;
    let s = num(fields.next()?, b's')?;
    let t = num(fields.next()?, b't')?;
    Some((p, s, t))
}

async fn watch_progress(shared: Arc<Shared>) {
    while !shared.stop_watcher.load(Ordering::Acquire) {
        let min = shared
            .progress
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX);
        shared.min_progress.store(min, Ordering::Release);
        shared.caught_up.notify_waiters();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

type Sink = SplitSink<Ws, Message>;

/// Reads (and counts) what the server sends back to a publisher.
async fn drain_own_copies(mut stream: SplitStream<Ws>, own: Arc<AtomicU64>) {
    while let Some(Ok(msg)) = stream.next().await {
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                own.fetch_add(1, Ordering::Relaxed);
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
}

/// Sends readiness records every 5 ms until every subscriber has received a record; returns how
/// many it sent. Fails after `deadline`.
async fn wait_ready(
    sink: &mut Sink,
    shared: &Shared,
    args: &BroadcastArgs,
    deadline: Instant,
) -> Result<u64> {
    let k = args.subscribers as u64;
    let mut sent = 0u64;
    while shared.ready.load(Ordering::Acquire) < k {
        if Instant::now() >= deadline {
            bail!(
                "only {} of {k} subscribers had received anything {:.1} s after the first \
                 readiness record ({sent} sent); a server (or a cluster node's subscription) is \
                 not delivering",
                shared.ready.load(Ordering::Acquire),
                args.ready_timeout().as_secs_f64()
            );
        }
        let record = ready_payload(0, sent, common::now_ns(), args.size);
        tokio::time::timeout_at(deadline.into(), sink.send(Message::text(record)))
            .await
            .context("sending a readiness record blocked until --ready-timeout")??;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(sent)
}

async fn publisher(
    id: usize,
    mut sink: Sink,
    shared: Arc<Shared>,
    args: BroadcastArgs,
    start: Instant,
    clock: Clock,
) -> (PubStats, Sink) {
    let mut stats = PubStats::default();
    let result = tokio::time::timeout_at(
        (clock.end + Duration::from_secs(1)).into(),
        publish(id, &mut sink, &shared, &args, start, clock, &mut stats),
    )
    .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => stats.error = Some(format!("{e:#}")),
        Err(_) => stats.error = Some("sending blocked past the end of the run".into()),
    }
    (stats, sink)
}

async fn publish(
    id: usize,
    sink: &mut Sink,
    shared: &Shared,
    args: &BroadcastArgs,
    start: Instant,
    clock: Clock,
    stats: &mut PubStats,
) -> Result<()> {
    let per_publisher = args.rate.map(|r| r / args.publishers as f64);
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        if now >= clock.end {
            return Ok(());
        }
        let want = match per_publisher {
            Some(r) => {
                let due = ((now - start).as_secs_f64() * r) as u64 + 1;
                due.saturating_sub(seq).min(BATCH)
            }
            None => BATCH,
        };
        if want == 0 {
            let next = start + Duration::from_secs_f64(seq as f64 / per_publisher.unwrap_or(1.0));
            tokio::time::sleep_until(next.min(clock.end).into()).await;
            continue;
        }
        let sent = shared.sent.load(Ordering::Acquire);
        let min = shared.min_progress.load(Ordering::Acquire);
        let allowed = min.saturating_add(args.max_lag).saturating_sub(sent);
        let n = want.min(allowed);
        if n == 0 {
            stats.lag_waits += 1;
            let _ =
                tokio::time::timeout(Duration::from_millis(2), shared.caught_up.notified()).await;
            continue;
        }
        for _ in 0..n {
            let t = common::now_ns();
            if t >= clock.warm_end_ns {
                stats.sent_measured += 1;
            }
            sink.feed(Message::text(payload(id, seq, t, args.size)))
                .await?;
            seq += 1;
            stats.sent += 1;
            shared.sent.fetch_add(1, Ordering::AcqRel);
        }
        sink.flush().await?;
    }
}

async fn subscriber(
    index: usize,
    group: usize,
    ws: Ws,
    shared: Arc<Shared>,
    publishers: usize,
    size: usize,
    ready_deadline: Instant,
) -> SubStats {
    let mut reader = FrameReader::new(ws, MAX_FRAME);
    let mut records = Records::new(publishers, size, group);
    let mut counted_ready = false;
    let mut last_message_ns = common::now_ns();
    // One timer for the whole loop (cheaper than a timeout per message): every 50 ms the loop
    // looks at whether publishing is over and everything has arrived.
    let tick = tokio::time::sleep(Duration::from_millis(50));
    tokio::pin!(tick);
    loop {
        let polled = tokio::select! {
            biased;
            read = reader.read_more() => Some(read),
            _ = &mut tick => None,
        };
        let Some(read) = polled else {
            let Some(clock) = shared.clock.get() else {
                // Still waiting for every subscriber to be ready; the run fails at the deadline.
                if Instant::now() >= ready_deadline + Duration::from_secs(5) {
                    records.stats.error = Some("never ready".into());
                    break;
                }
                tick.as_mut()
                    .reset(tokio::time::Instant::now() + Duration::from_millis(50));
                continue;
            };
            if shared.publishing_done.load(Ordering::Acquire)
                && (records.progress >= shared.sent.load(Ordering::Acquire)
                    || common::now_ns().saturating_sub(last_message_ns) >= clock.drain_idle_ns)
            {
                break;
            }
            if Instant::now() >= clock.drain_end {
                break;
            }
            tick.as_mut()
                .reset(tokio::time::Instant::now() + Duration::from_millis(50));
            continue;
        };
        match read {
            Ok(0) => {
                records.stats.error = Some("connection closed by the server".into());
                break;
            }
            Err(e) => {
                records.stats.error = Some(format!("{e:#}"));
                break;
            }
            Ok(_) => {}
        }
        // Everything in one read arrived at the same moment.
        let now = common::now_ns();
        last_message_ns = now;
        // The clock is set before the first data record is sent, so a read holding data records
        // always sees it.
        let window = shared.clock.get().map_or(Window::NOT_YET, Clock::window);
        if let Err(e) = read_frames(&mut reader, &mut records, now, window).await {
            records.stats.error = Some(format!("{e:#}"));
            break;
        }
        if !counted_ready && records.stats.ready_records + records.stats.records > 0 {
            counted_ready = true;
            shared.ready.fetch_add(1, Ordering::AcqRel);
        }
        shared.progress[index].store(records.progress, Ordering::Release);
        if shared.publishing_done.load(Ordering::Acquire)
            && records.progress >= shared.sent.load(Ordering::Acquire)
        {
            break;
        }
    }
    shared.progress[index].store(u64::MAX, Ordering::Release);
    let _ = tokio::time::timeout(Duration::from_millis(500), reader.close()).await;
    records.stats
}

/// Largest frame a subscriber accepts.
const MAX_FRAME: usize = 64 << 20;

/// Handles the whole frames in the reader's buffer: records from data frames, pongs for pings.
/// The latencies of the records read are kept whatever ends the read (a close frame, an error).
async fn read_frames(
    reader: &mut FrameReader,
    records: &mut Records,
    now: u64,
    window: Window,
) -> Result<()> {
    let handled = handle_frames(reader, records, now, window).await;
    common::thread_histograms::record(records.slot, &records.latencies);
    records.latencies.clear();
    handled
}

async fn handle_frames(
    reader: &mut FrameReader,
    records: &mut Records,
    now: u64,
    window: Window,
) -> Result<()> {
    while let Some(frame) = reader.next_frame()? {
        match frame.opcode {
            OpCode::Data(_) => records.feed(reader.payload(&frame), now, window),
            OpCode::Control(Control::Ping) => {
                let payload = reader.payload(&frame).to_vec();
                reader.consume(frame);
                reader.pong(payload).await?;
                continue;
            }
            OpCode::Control(Control::Close) => {
                let payload = reader.payload(&frame);
                let code = payload
                    .get(..2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .unwrap_or(1005);
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                bail!("closed by the server: {code} {reason:?}");
            }
            OpCode::Control(_) => {}
        }
        reader.consume(frame);
    }
    Ok(())
}

/// A subscriber's view of the records it receives: order, gaps and latency per publisher.
///
/// Payload text is split on `;` whatever the frames, because libwebsockets' test server may
/// split one message into two or join messages.
struct Records {
    stats: SubStats,
    /// Next expected sequence number from each publisher.
    next: Vec<u64>,
    /// Messages accounted for (received, or skipped over by a later sequence number).
    progress: u64,
    /// The start of a record whose end has not arrived yet.
    partial: Vec<u8>,
    /// Latencies (µs) of the records of the current read, recorded together.
    latencies: Vec<u64>,
    size: usize,
    /// The latency histogram slot (the index of the subscriber's server).
    slot: usize,
}

impl Records {
    fn new(publishers: usize, size: usize, slot: usize) -> Records {
        Records {
            stats: SubStats::default(),
            next: vec![0; publishers],
            progress: 0,
            partial: Vec::new(),
            latencies: Vec::new(),
            size,
            slot,
        }
    }

    /// Takes the text of a data frame that arrived at `now`.
    fn feed(&mut self, data: &[u8], now: u64, window: Window) {
        let mut rest = data;
        if !self.partial.is_empty() {
            let Some(end) = memchr::memchr(b';', rest) else {
                self.partial.extend_from_slice(rest);
                return;
            };
            let mut record = std::mem::take(&mut self.partial);
            record.extend_from_slice(&rest[..end]);
            self.record(&record, now, window);
            rest = &rest[end + 1..];
        }
        while let Some(end) = memchr::memchr(b';', rest) {
            self.record(&rest[..end], now, window);
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    fn record(&mut self, record: &[u8], now: u64, window: Window) {
        let publishers = self.next.len();
        let stats = &mut self.stats;
        if record.first() == Some(&b'r') && parse_as(record, b'r').is_some() {
            stats.ready_records += 1;
            return;
        }
        let Some((p, seq, t)) = parse(record).filter(|r| r.0 < publishers) else {
            stats.malformed += 1;
            if stats.sample.is_none() {
                stats.sample = Some(String::from_utf8_lossy(record).into_owned());
            }
            return;
        };
        stats.records += 1;
        if record.len() + 1 != self.size {
            stats.wrong_size += 1;
            if stats.sample.is_none() {
                stats.sample = Some(String::from_utf8_lossy(record).into_owned());
            }
        }
        let next = &mut self.next[p];
        if seq < *next {
            stats.order_violations += 1;
        } else {
            stats.gaps += seq - *next;
            self.progress += seq + 1 - *next;
            *next = seq + 1;
        }
        if t >= window.warm_end_ns {
            stats.measured += 1;
            self.latencies.push(now.saturating_sub(t) / 1000);
        }
        if now >= window.warm_end_ns && now < window.end_ns {
            stats.in_window += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_fixed_size_with_one_delimiter() {
        let p = payload(3, 12345, 987654321, 64);
        assert_eq!(p.len(), 64);
        assert!(p.starts_with("p3 s12345 t987654321 x"));
        assert_eq!(p.matches(';').count(), 1);
        assert!(p.ends_with(';'));
        assert_eq!(parse(&p.as_bytes()[..63]), Some((3, 12345, 987654321)));
    }

    #[test]
    fn readiness_records_are_told_apart() {
        let r = ready_payload(0, 7, 42, 64);
        assert_eq!(r.len(), 64);
        assert!(r.starts_with("r0 s7 t42 x"));
        assert_eq!(parse_as(&r.as_bytes()[..63], b'r'), Some((0, 7, 42)));
        assert_eq!(parse(&r.as_bytes()[..63]), None);

        let mut records = Records::new(1, 64, 0);
        let data = payload(0, 0, 5, 64);
        records.feed(format!("{r}{data}").as_bytes(), 10, Window::NOT_YET);
        assert_eq!(records.stats.ready_records, 1);
        assert_eq!(records.stats.records, 1);
        assert_eq!(records.stats.malformed, 0);
        assert_eq!(records.stats.gaps, 0);
        assert_eq!(records.progress, 1);
        assert_eq!(records.stats.measured, 0);
    }

    #[test]
    fn malformed_records_are_refused() {
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(parse(b"p1 s2"), None);
        assert_eq!(parse(b"p1 sx t3"), None);
        assert_eq!(parse(b"p1 s+2 t3"), None);
        assert_eq!(parse(b"p1 s2 t"), None);
        assert_eq!(parse(b"p1 s2 t99999999999999999999"), None);
    }
}
