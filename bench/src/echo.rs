//! `echo`: C connections, each keeping W messages of P bytes in flight; measures round trips.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Map, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{self, Target, Ws};
use crate::Common;

#[derive(clap::Args, Debug, Clone)]
pub struct EchoArgs {
    /// Connections
    #[arg(short = 'c', long, default_value_t = 50)]
    pub connections: usize,
    /// Messages in flight per connection
    #[arg(short = 'w', long, default_value_t = 1)]
    pub window: usize,
    /// Payload size in bytes
    #[arg(short = 's', long, default_value_t = 64)]
    pub size: usize,
    /// WebSocket subprotocol to offer (`none`: offer none)
    #[arg(long, default_value = "echo")]
    pub protocol: String,
    /// Send binary messages instead of text
    #[arg(long)]
    pub binary: bool,
}

impl EchoArgs {
    pub fn time_bound(&self, common: &Common) -> Duration {
        let batches = self.connections.div_ceil(common.concurrency.max(1)) as u32;
        common.warmup()
            + common.duration()
            + common.connect_timeout() * (batches + 1)
            + Duration::from_secs(10)
    }
}

#[derive(Default)]
struct ConnStats {
    sent: u64,
    received: u64,
    measured: u64,
    wrong_payload: u64,
    error: Option<String>,
}

pub async fn run(common: &Common, args: &EchoArgs) -> Result<()> {
    if args.window == 0 || args.connections == 0 {
        bail!("--connections and --window must be at least 1");
    }
    let target = Target::parse(&common.url)?;
    let protocol = common::protocol_option(&args.protocol);
    let conns = common::connect_many(
        &target,
        protocol,
        args.connections,
        common.concurrency,
        common::ws_config(64 * 1024),
        common.connect_timeout(),
    )
    .await?;

    let payload = if args.binary {
        Message::binary(vec![b'x'; args.size])
    } else {
        Message::text("x".repeat(args.size))
    };
    let start = Instant::now();
    let warm_end = start + common.warmup();
    let end = warm_end + common.duration();
    let mut tasks = Vec::new();
    for ws in conns {
        let payload = payload.clone();
        let window = args.window;
        let size = args.size;
        tasks.push(tokio::spawn(async move {
            let mut hist = common::new_histogram();
            let mut stats = ConnStats::default();
            if let Err(e) = echo_conn(
                ws, payload, size, window, warm_end, end, &mut hist, &mut stats,
            )
            .await
            {
                stats.error = Some(format!("{e:#}"));
            }
            (hist, stats)
        }));
    }

    let mut hist = common::new_histogram();
    let mut total = ConnStats::default();
    let mut failed = 0u64;
    let mut first_error = None;
    for task in tasks {
        let (h, s) = task.await?;
        hist.add(&h).ok();
        total.sent += s.sent;
        total.received += s.received;
        total.measured += s.measured;
        total.wrong_payload += s.wrong_payload;
        if let Some(e) = s.error {
            failed += 1;
            first_error.get_or_insert(e);
        }
    }
    let secs = common.duration().as_secs_f64();
    let rate = total.measured as f64 / secs;

    println!(
        "echo: {} connections x {} in flight, {} B {}, protocol {}, {:.1} s measured after {:.1} s warm-up",
        args.connections,
        args.window,
        args.size,
        if args.binary { "binary" } else { "text" },
        args.protocol,
        secs,
        common.warmup().as_secs_f64()
    );
    println!("  messages/s (round trips): {rate:.0}");
    println!("  latency (send -> echo): {}", common::latency_line(&hist));
    println!(
        "  sent {} received {} wrong payloads {} failed connections {}",
        total.sent, total.received, total.wrong_payload, failed
    );
    if let Some(e) = &first_error {
        println!("  first error: {e}");
    }

    let mut out = Map::new();
    out.insert("mode".into(), "echo".into());
    out.insert("connections".into(), args.connections.into());
    out.insert("window".into(), args.window.into());
    out.insert("size".into(), args.size.into());
    out.insert("protocol".into(), args.protocol.clone().into());
    out.insert("duration_s".into(), secs.into());
    out.insert("messages_per_s".into(), common::round3(rate).into());
    out.insert("measured".into(), total.measured.into());
    out.insert("sent".into(), total.sent.into());
    out.insert("received".into(), total.received.into());
    out.insert("wrong_payload".into(), total.wrong_payload.into());
    out.insert("failed_connections".into(), failed.into());
    common::latency_fields(&mut out, "", &hist);
    out.insert(
        "first_error".into(),
        first_error.map(Value::from).unwrap_or(Value::Null),
    );
    common::print_json(out);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn echo_conn(
    mut ws: Ws,
    payload: Message,
    size: usize,
    window: usize,
    warm_end: Instant,
    end: Instant,
    hist: &mut Histogram<u64>,
    stats: &mut ConnStats,
) -> Result<()> {
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(window);
    // After `end` no new message is sent; the ones in flight get this long to come back.
    let drain_end = end + Duration::from_secs(2);
    loop {
        let mut fed = false;
        while in_flight.len() < window && Instant::now() < end {
            in_flight.push_back(Instant::now());
            ws.feed(payload.clone()).await?;
            stats.sent += 1;
            fed = true;
        }
        if fed {
            ws.flush().await?;
        }
        if in_flight.is_empty() {
            break;
        }
        let msg = match tokio::time::timeout_at(drain_end.into(), ws.next()).await {
            Err(_) => break,
            Ok(None) => bail!("connection closed by the server"),
            Ok(Some(msg)) => msg?,
        };
        let len = match &msg {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
            Message::Close(frame) => bail!("server closed the connection: {frame:?}"),
            _ => continue,
        };
        let now = Instant::now();
        let Some(sent_at) = in_flight.pop_front() else {
            bail!("received a message that was never sent");
        };
        stats.received += 1;
        if len != size {
            stats.wrong_payload += 1;
        }
        if now >= warm_end && now <= end {
            stats.measured += 1;
            hist.saturating_record((now - sent_at).as_micros() as u64);
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    Ok(())
}
