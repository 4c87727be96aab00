//! `switchboard-load`: a WebSocket load client for Switchboard and its peers (libwebsockets' test
//! server). Loopback only. Each mode prints a human summary and then one JSON line.

mod broadcast;
mod common;
mod connect;
mod echo;
mod fanout;
mod frames;
mod soak;
mod tls;

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "switchboard-load",
    version,
    about = "WebSocket load client (echo, broadcast, idle connections, soak); 127.0.0.0/8 only"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// C connections x W messages in flight on an echo protocol; messages/s and round-trip latency
    Echo {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: echo::EchoArgs,
    },
    /// K subscribers and P publishers on lws-mirror-protocol; deliveries/s, loss, order, latency
    Broadcast {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: broadcast::BroadcastArgs,
    },
    /// N idle connections opened at R/s and held; the server's memory per connection
    Connect {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: connect::ConnectArgs,
    },
    /// Mixed load for a long run: chat, mirror broadcasts, slow consumers, static ranges,
    /// uploads, connections opening and closing; progress lines every --report-every seconds
    Soak {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: soak::SoakArgs,
    },
    /// One publisher to a room of N members that may offer permessage-deflate: server CPU and
    /// wire bytes per delivery.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: fanout::FanoutArgs,
    },
    /// Print a TCP port that is free on 127.0.0.1 right now
    FreePort,
}

/// Options every load mode has.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Server URL (ws:// or wss://127.x.y.z:PORT/...; loopback only)
    #[arg(long, default_value = "ws://127.0.0.1:7681/")]
    pub url: String,
    /// PEM certificate of the authority that signed the server's certificate (for wss://)
    #[arg(long)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Seconds measured (echo, broadcast)
    #[arg(short = 'd', long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring starts (echo, broadcast)
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds allowed for one connection's TCP connect + handshake
    #[arg(long, default_value_t = 5.0)]
    pub connect_timeout: f64,
    /// Handshakes in progress at once while connecting (echo, broadcast)
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Client worker threads (default: one per core)
    #[arg(long)]
    pub threads: Option<usize>,
}

impl Common {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.clamp(0.001, 86_400.0))
    }
    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup.clamp(0.0, 86_400.0))
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout.clamp(0.001, 600.0))
    }
}

fn main() {
    let cli = Cli::parse();
    common::init_clock();
    let (common, bound) = match &cli.mode {
        Mode::Echo { common, args } => (common, args.time_bound(common)),
        Mode::Broadcast { common, args } => (common, args.time_bound(common)),
        Mode::Connect { common, args } => (common, args.time_bound(common)),
        Mode::Soak { common, args } => (common, args.time_bound(common)),
        Mode::Fanout { common, args } => (common, args.time_bound(common)),
        Mode::FreePort => {
            match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
                Ok(addr) => println!("{}", addr.port()),
                Err(e) => {
                    eprintln!("switchboard-load: {e}");
                    std::process::exit(1);
                }
            }
            return;
        }
    };
    common::raise_nofile_limit();
    let code = match run(&cli.mode, common, bound) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("switchboard-load: {e:#}");
            1
        }
    };
    // Don't wait for connection tasks that are still winding down.
    std::process::exit(code);
}

fn run(mode: &Mode, common: &Common, bound: Duration) -> Result<()> {
    tls::init(common.ca_cert.as_deref())?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = common.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let load = async {
            match mode {
                Mode::Echo { common, args } => echo::run(common, args).await,
                Mode::Broadcast { common, args } => broadcast::run(common, args).await,
                Mode::Connect { common, args } => connect::run(common, args).await,
                Mode::Soak { common, args } => soak::run(common, args).await,
                Mode::Fanout { common, args } => fanout::run(common, args).await,
                Mode::FreePort => Ok(()),
            }
        };
        tokio::time::timeout(bound, load)
            .await
            .with_context(|| format!("the run did not finish within its bound of {bound:?}"))?
    })
}
