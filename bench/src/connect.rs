//! `connect`: N idle WebSocket connections opened at R per second and held for H seconds, with the
//! server's resident memory read before, while held, and after they close.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::StreamExt;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{self, Target};
use crate::Common;

/// Connections per loopback source address before another one is used (ephemeral ports).
const PER_SOURCE: usize = 20_000;

#[derive(clap::Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Connections to open
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: usize,
    /// Connections opened per second
    #[arg(short = 'r', long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds to hold them all open once opened
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
    /// WebSocket subprotocol to offer (`none`: offer none)
    #[arg(long, default_value = "lws-mirror-protocol")]
    pub protocol: String,
    /// Server process whose VmRSS is read from /proc/PID/status
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Loopback source addresses to spread connections over (127.0.0.1, .2, ...); 0: one per
    /// 20,000 connections
    #[arg(long, default_value_t = 0)]
    pub source_ips: usize,
    /// Offer permessage-deflate (as browsers do) on every connection
    #[arg(long)]
    pub deflate: bool,
    /// Seconds to wait before reading the server's memory after opening and after closing
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
}

impl ConnectArgs {
    pub fn time_bound(&self, common: &Common) -> Duration {
        Duration::from_secs_f64(
            self.connections as f64 / self.rate.max(1.0)
                + self.hold.max(0.0)
                + 2.0 * self.settle.max(0.0)
                + 20.0,
        ) + common.connect_timeout()
    }
}

pub async fn run(common: &Common, args: &ConnectArgs) -> Result<()> {
    if args.rate <= 0.0 || !args.rate.is_finite() {
        bail!("--rate must be positive");
    }
    let target = Target::parse(&common.url)?;
    let limit = common::raise_nofile_limit();
    if args.connections as u64 + 64 > limit {
        bail!(
            "{} connections need more file descriptors than RLIMIT_NOFILE allows ({limit})",
            args.connections
        );
    }
    let sources = match args.source_ips {
        0 => args.connections.div_ceil(PER_SOURCE).max(1),
        n => n,
    };
    if sources > 250 {
        bail!("too many source addresses ({sources})");
    }
    let rss = |pid: Option<u32>| -> Result<Option<u64>> { pid.map(common::rss_kib).transpose() };
    let settle = Duration::from_secs_f64(args.settle.max(0.0));
    let rss_before = rss(args.server_pid)?;

    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<Duration, String>>();
    let (release_tx, release_rx) = watch::channel(false);
    let closed_early = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    let t0 = Instant::now();
    let protocol = common::protocol_option(&args.protocol).map(str::to_string);
    let config = common::ws_config(4096);
    for i in 0..args.connections {
        tokio::time::sleep_until((t0 + Duration::from_secs_f64(i as f64 / args.rate)).into()).await;
        let source = (sources > 1).then(|| Ipv4Addr::new(127, 0, 0, 1 + (i % sources) as u8));
        let target = target.clone();
        let protocol = protocol.clone();
        let done_tx = done_tx.clone();
        let mut release = release_rx.clone();
        let closed_early = closed_early.clone();
        let timeout = common.connect_timeout();
        let deflate = args.deflate;
        tasks.spawn(async move {
            let begun = Instant::now();
            let extensions = deflate.then_some("permessage-deflate; client_max_window_bits");
            let mut ws = match common::connect_offering(
                &target,
                protocol.as_deref(),
                extensions,
                source,
                config,
                timeout,
            )
            .await
            {
                Ok(ws) => ws,
                Err(e) => {
                    let _ = done_tx.send(Err(format!("{e:#}")));
                    return;
                }
            };
            let _ = done_tx.send(Ok(begun.elapsed()));
            drop(done_tx);
            loop {
                tokio::select! {
                    _ = release.changed() => break,
                    msg = ws.next() => match msg {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {
                            closed_early.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Some(Ok(_)) => {}
                    },
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        });
    }
    drop(done_tx);

    let mut hist = common::new_histogram();
    let mut established = 0u64;
    let mut failed = 0u64;
    let mut first_error = None;
    // Every task reports once, then lets go of its sender.
    while let Some(result) = done_rx.recv().await {
        match result {
            Ok(took) => {
                established += 1;
                hist.saturating_record(took.as_micros() as u64);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let opening = t0.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let rss_held = rss(args.server_pid)?;
    let open_after_settle = established - closed_early.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.hold.max(0.0))).await;
    let open_after_hold = established - closed_early.load(Ordering::Relaxed);
    let rss_end = rss(args.server_pid)?;

    let _ = release_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    tokio::time::sleep(settle).await;
    let rss_closed = rss(args.server_pid)?;

    let per_conn = match (rss_before, rss_held) {
        (Some(b), Some(h)) if established > 0 => {
            Some((h as f64 - b as f64) * 1024.0 / established as f64)
        }
        _ => None,
    };

    println!(
        "connect: {} connections requested at {}/s, protocol {}{}, held {:.1} s, {} source address(es)",
        args.connections,
        args.rate,
        args.protocol,
        if args.deflate { ", offering permessage-deflate" } else { "" },
        args.hold,
        sources
    );
    println!(
        "  established {established} failed {failed} in {opening:.2} s ({:.0}/s)",
        established as f64 / opening
    );
    println!("  handshake time: {}", common::latency_line(&hist));
    println!("  still open after settling {open_after_settle}, after holding {open_after_hold}");
    match (rss_before, rss_held, rss_end, rss_closed) {
        (Some(b), Some(h), Some(e), Some(c)) => {
            println!(
                "  server VmRSS: before {b} KiB, held {h} KiB, end of hold {e} KiB, after close {c} KiB"
            );
            if let Some(p) = per_conn {
                println!("  server memory per connection: {p:.0} bytes");
            }
        }
        _ => println!("  server memory: not measured (no --server-pid)"),
    }
    if let Some(e) = &first_error {
        println!("  first error: {e}");
    }

    let opt = |v: Option<u64>| v.map(Value::from).unwrap_or(Value::Null);
    let mut out = Map::new();
    out.insert("mode".into(), "connect".into());
    out.insert("connections".into(), args.connections.into());
    out.insert("protocol".into(), args.protocol.clone().into());
    out.insert("deflate_offered".into(), args.deflate.into());
    out.insert("established".into(), established.into());
    out.insert("failed".into(), failed.into());
    out.insert("open_after_settle".into(), open_after_settle.into());
    out.insert("open_after_hold".into(), open_after_hold.into());
    out.insert("opening_s".into(), common::round3(opening).into());
    out.insert("rss_before_kib".into(), opt(rss_before));
    out.insert("rss_held_kib".into(), opt(rss_held));
    out.insert("rss_end_kib".into(), opt(rss_end));
    out.insert("rss_closed_kib".into(), opt(rss_closed));
    out.insert(
        "bytes_per_connection".into(),
        per_conn
            .map(|p| Value::from(p.round()))
            .unwrap_or(Value::Null),
    );
    common::latency_fields(&mut out, "handshake_", &hist);
    out.insert(
        "first_error".into(),
        first_error.map(Value::from).unwrap_or(Value::Null),
    );
    common::print_json(out);
    Ok(())
}
