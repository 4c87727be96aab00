//! `broadcast`: K subscribers and P publishers in one `lws-mirror-protocol` instance.
//!
//! Every payload is text of exactly `--size` bytes, `p<publisher> s<seq> t<ns> xxx…;`, ending in the
//! only `;`. Subscribers concatenate whatever text arrives and split it on `;`, because
//! libwebsockets' test server may split one message into two or join messages. Each subscriber
//! checks that every publisher's sequence numbers only increase, and counts what it missed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
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
}

impl BroadcastArgs {
    pub fn time_bound(&self, common: &Common) -> Duration {
        let n = self.subscribers + self.publishers;
        let batches = n.div_ceil(common.concurrency.max(1)) as u32;
        common.warmup()
            + common.duration()
            + Duration::from_secs_f64(self.drain_max.max(0.0))
            + common.connect_timeout() * (batches + 1)
            + Duration::from_secs(15)
    }
}

struct Shared {
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

struct SubStats {
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

#[derive(Clone, Copy)]
struct Clock {
    warm_end_ns: u64,
    end_ns: u64,
    end: Instant,
    /// Hard end of the drain.
    drain_end: Instant,
    /// Quiet time after which a subscriber stops waiting once publishing is over.
    drain_idle_ns: u64,
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
    let target = Target::parse(&common.url)?.with_query("mirror", &mirror);
    let protocol = common::protocol_option(&args.protocol);
    let config = common::ws_config(8 * 1024);

    let subs = common::connect_many(
        &target,
        protocol,
        args.subscribers,
        common.concurrency,
        config,
        common.connect_timeout(),
    )
    .await?;
    let pubs = common::connect_many(
        &target,
        protocol,
        args.publishers,
        common.concurrency,
        config,
        common.connect_timeout(),
    )
    .await?;

    let shared = Arc::new(Shared {
        sent: AtomicU64::new(0),
        progress: (0..args.subscribers).map(|_| AtomicU64::new(0)).collect(),
        min_progress: AtomicU64::new(if args.subscribers == 0 { u64::MAX } else { 0 }),
        publishing_done: AtomicBool::new(false),
        stop_watcher: AtomicBool::new(false),
        caught_up: Notify::new(),
        own_copies: Arc::new(AtomicU64::new(0)),
    });
    // Let the server finish registering the members before the clock starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
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

    let mut sub_tasks = Vec::new();
    for (i, ws) in subs.into_iter().enumerate() {
        let shared = shared.clone();
        let (publishers, size) = (args.publishers, args.size);
        sub_tasks.push(tokio::spawn(subscriber(
            i, ws, shared, publishers, size, clock,
        )));
    }
    let watcher = tokio::spawn(watch_progress(shared.clone()));
    let mut pub_tasks = Vec::new();
    for (id, ws) in pubs.into_iter().enumerate() {
        let shared = shared.clone();
        let args = args.clone();
        pub_tasks.push(tokio::spawn(publisher(id, ws, shared, args, start, clock)));
    }

    let mut pub_total = PubStats::default();
    let mut pub_conns = Vec::new();
    let mut first_error: Option<String> = None;
    for task in pub_tasks {
        let (stats, sink, reader) = task.await?;
        pub_total.sent += stats.sent;
        pub_total.sent_measured += stats.sent_measured;
        pub_total.lag_waits += stats.lag_waits;
        if let Some(e) = stats.error {
            pub_total.error.get_or_insert(e.clone());
            first_error.get_or_insert(format!("publisher: {e}"));
        }
        pub_conns.push((sink, reader));
    }
    shared.publishing_done.store(true, Ordering::Release);

    let mut records = 0u64;
    let mut measured = 0u64;
    let mut in_window = 0u64;
    let mut order_violations = 0u64;
    let mut gaps = 0u64;
    let mut malformed = 0u64;
    let mut wrong_size = 0u64;
    let mut failed_subscribers = 0u64;
    let mut first_bad_record: Option<String> = None;
    for task in sub_tasks {
        let s = task.await?;
        records += s.records;
        measured += s.measured;
        in_window += s.in_window;
        order_violations += s.order_violations;
        gaps += s.gaps;
        malformed += s.malformed;
        wrong_size += s.wrong_size;
        if first_bad_record.is_none() {
            first_bad_record = s.sample;
        }
        if let Some(e) = s.error {
            failed_subscribers += 1;
            first_error.get_or_insert(format!("subscriber: {e}"));
        }
    }
    shared.stop_watcher.store(true, Ordering::Release);
    let hist = common::thread_histograms::merged();
    watcher.await?;
    let own_copies = shared.own_copies.load(Ordering::Relaxed);
    for (mut sink, reader) in pub_conns {
        let _ = tokio::time::timeout(Duration::from_millis(500), sink.close()).await;
        reader.abort();
    }

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

/// Parses a record (the text before a `;`) into (publisher, seq, send time).
fn parse(record: &[u8]) -> Option<(usize, u64, u64)> {
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
    let p = usize::try_from(num(fields.next()?, b'p')?).ok()?;
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

async fn publisher(
    id: usize,
    ws: Ws,
    shared: Arc<Shared>,
    args: BroadcastArgs,
    start: Instant,
    clock: Clock,
) -> (PubStats, Sink, JoinHandle<()>) {
    let (mut sink, mut stream) = ws.split();
    // The publisher is a member too: drain its own copies so the server never sees it as slow.
    let own = shared.own_copies.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Text(_) | Message::Binary(_) => {
                    own.fetch_add(1, Ordering::Relaxed);
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    });
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
    (stats, sink, reader)
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
    ws: Ws,
    shared: Arc<Shared>,
    publishers: usize,
    size: usize,
    clock: Clock,
) -> SubStats {
    let mut reader = FrameReader::new(ws, MAX_FRAME);
    let mut records = Records::new(publishers, size);
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
        if let Err(e) = read_frames(&mut reader, &mut records, now, &clock).await {
            records.stats.error = Some(format!("{e:#}"));
            break;
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
    clock: &Clock,
) -> Result<()> {
    let handled = handle_frames(reader, records, now, clock).await;
    common::thread_histograms::record(&records.latencies);
    records.latencies.clear();
    handled
}

async fn handle_frames(
    reader: &mut FrameReader,
    records: &mut Records,
    now: u64,
    clock: &Clock,
) -> Result<()> {
    while let Some(frame) = reader.next_frame()? {
        match frame.opcode {
            OpCode::Data(_) => records.feed(reader.payload(&frame), now, clock),
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
}

impl Records {
    fn new(publishers: usize, size: usize) -> Records {
        Records {
            stats: SubStats {
                records: 0,
                measured: 0,
                in_window: 0,
                order_violations: 0,
                gaps: 0,
                malformed: 0,
                wrong_size: 0,
                error: None,
                sample: None,
            },
            next: vec![0; publishers],
            progress: 0,
            partial: Vec::new(),
            latencies: Vec::new(),
            size,
        }
    }

    /// Takes the text of a data frame that arrived at `now`.
    fn feed(&mut self, data: &[u8], now: u64, clock: &Clock) {
        let mut rest = data;
        if !self.partial.is_empty() {
            let Some(end) = memchr::memchr(b';', rest) else {
                self.partial.extend_from_slice(rest);
                return;
            };
            let mut record = std::mem::take(&mut self.partial);
            record.extend_from_slice(&rest[..end]);
            self.record(&record, now, clock);
            rest = &rest[end + 1..];
        }
        while let Some(end) = memchr::memchr(b';', rest) {
            self.record(&rest[..end], now, clock);
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    fn record(&mut self, record: &[u8], now: u64, clock: &Clock) {
        let publishers = self.next.len();
        let stats = &mut self.stats;
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
        if t >= clock.warm_end_ns {
            stats.measured += 1;
            self.latencies.push(now.saturating_sub(t) / 1000);
        }
        if now >= clock.warm_end_ns && now < clock.end_ns {
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
    fn malformed_records_are_refused() {
        assert_eq!(parse(b"garbage"), None);
        assert_eq!(parse(b"p1 s2"), None);
        assert_eq!(parse(b"p1 sx t3"), None);
        assert_eq!(parse(b"p1 s+2 t3"), None);
        assert_eq!(parse(b"p1 s2 t"), None);
        assert_eq!(parse(b"p1 s2 t99999999999999999999"), None);
    }
}
