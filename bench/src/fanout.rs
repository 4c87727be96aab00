//! `fanout`: one publisher sends chat-like JSON messages to a mirror room of N members, who may
//! offer permessage-deflate; prints the server's CPU time per delivery and the bytes each
//! delivery took on the wire. Members are raw clients that count frames and bytes without
//! inflating anything, so the client's own cost does not depend on compression.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::common::{self, Target};
use crate::Common;

#[derive(clap::Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Members of the room
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub members: usize,
    /// Messages the publisher sends
    #[arg(short = 'm', long, default_value_t = 200)]
    pub messages: usize,
    /// Size of each message (a JSON array of chat messages, cut to this length)
    #[arg(short = 's', long, default_value_t = 1024)]
    pub size: usize,
    /// Messages per second
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Members offer permessage-deflate
    #[arg(long)]
    pub deflate: bool,
    /// Server process whose CPU time is read from /proc/PID/stat
    #[arg(long)]
    pub server_pid: Option<u32>,
}

impl FanoutArgs {
    pub fn time_bound(&self, common: &Common) -> Duration {
        Duration::from_secs_f64(self.messages as f64 / self.rate.max(1.0) + 60.0)
            + common.connect_timeout()
    }
}

/// Server CPU time (user + system) in seconds, from /proc/PID/stat.
fn server_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// A chat-like JSON message of exactly `size` bytes, different for each `seq`.
fn chat_json(seq: usize, size: usize) -> String {
    const NICKS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];
    const WORDS: [&str; 16] = [
        "hello", "anyone", "seen", "the", "build", "today", "it", "failed", "again", "on", "main",
        "after", "merge", "looks", "fine", "now",
    ];
    let mut out = String::from("[");
    let mut n = seq as u64;
    while out.len() < size {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let words: Vec<&str> = (0..8)
            .map(|k| WORDS[((n >> (k * 4 + 8)) & 15) as usize])
            .collect();
        out.push_str(&format!(
            r#"{{"type":"message","room":"lobby","id":{},"nick":"{}","ts":{},"text":"{}"}},"#,
            seq * 100 + out.len(),
            NICKS[(n >> 60) as usize % NICKS.len()],
            1_764_400_000_000u64 + (n >> 40),
            words.join(" ")
        ));
    }
    out.truncate(size - 1);
    out.push(']');
    out
}

/// Opens a raw WebSocket on the mirror room; returns the stream and whether deflate was agreed.
async fn open(target: &Target, room: &str, deflate: bool) -> Result<(TcpStream, bool)> {
    let mut stream = TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let extensions = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET /?mirror={room} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: lws-mirror-protocol\r\n{extensions}\r\n",
        target.addr
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            bail!("connection closed during the handshake");
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if !head.starts_with("http/1.1 101") {
        bail!("handshake refused: {}", head.lines().next().unwrap_or(""));
    }
    Ok((stream, head.contains("permessage-deflate")))
}

/// Reads server frames, counting whole data messages and all bytes, until `expected` messages.
async fn count(mut stream: TcpStream, expected: u64, bytes: Arc<AtomicU64>) -> Result<u64> {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    let mut messages = 0u64;
    while messages < expected {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed after {messages} messages");
        }
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            if rest.len() < 2 {
                break;
            }
            let (len, header) = match rest[1] & 0x7f {
                126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as usize, 4),
                127 if rest.len() >= 10 => {
                    (u64::from_be_bytes(rest[2..10].try_into()?) as usize, 10)
                }
                126 | 127 => break,
                short => (short as usize, 2),
            };
            if rest.len() < header + len {
                break;
            }
            let (fin, opcode) = (rest[0] & 0x80 != 0, rest[0] & 0x0f);
            if fin && (opcode == 1 || opcode == 2 || opcode == 0) {
                messages += 1;
            }
            pos += header + len;
        }
        buf.drain(..pos);
    }
    Ok(messages)
}

pub async fn run(common: &Common, args: &FanoutArgs) -> Result<()> {
    let target = Target::parse(&common.url)?;
    let room = format!("fanout{}", std::process::id());
    let bytes = Arc::new(AtomicU64::new(0));
    let mut members = JoinSet::new();
    let mut negotiated = 0;
    for _ in 0..args.members {
        let (stream, agreed) = open(&target, &room, args.deflate).await?;
        negotiated += agreed as usize;
        let bytes = bytes.clone();
        let expected = args.messages as u64;
        members.spawn(async move { count(stream, expected, bytes).await });
    }
    let (mut publisher, _) = open(&target, &room, false).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before = args.server_pid.map(server_cpu_seconds).transpose()?;
    let t0 = Instant::now();
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let (mut reader, mut writer) = publisher.split();
    let drain = async {
        let mut sink = vec![0u8; 65536];
        while reader.read(&mut sink).await.unwrap_or(0) > 0 {}
    };
    let send = async {
        for seq in 0..args.messages {
            let at = t0 + Duration::from_secs_f64(seq as f64 / args.rate);
            tokio::time::sleep_until(at.into()).await;
            let mut payload = chat_json(seq, args.size).into_bytes();
            let mut frame = vec![0x81u8];
            match payload.len() {
                0..=125 => frame.push(0x80 | payload.len() as u8),
                _ => {
                    frame.push(0x80 | 126);
                    frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                }
            }
            frame.extend_from_slice(&mask);
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
            frame.extend_from_slice(&payload);
            writer.write_all(&frame).await?;
        }
        let mut received = 0u64;
        while let Some(result) = members.join_next().await {
            received += result??;
        }
        anyhow::Ok(received)
    };
    let received = tokio::select! {
        received = send => received?,
        _ = drain => bail!("the publisher's connection closed"),
    };
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = match (cpu_before, args.server_pid) {
        (Some(before), Some(pid)) => Some(server_cpu_seconds(pid)? - before),
        _ => None,
    };
    let wire = bytes.load(Ordering::Relaxed);
    let per_delivery_bytes = wire as f64 / received.max(1) as f64;
    println!(
        "fanout: {} members ({} negotiated permessage-deflate), {} messages of {} bytes at {}/s",
        args.members, negotiated, args.messages, args.size, args.rate
    );
    println!("  {received} deliveries in {elapsed:.2} s; {per_delivery_bytes:.0} wire bytes per delivery");
    if let Some(cpu) = cpu {
        println!(
            "  server CPU {cpu:.2} s: {:.2} µs per delivery",
            cpu * 1e6 / received.max(1) as f64
        );
    }
    let mut out = Map::new();
    out.insert("mode".into(), "fanout".into());
    out.insert("members".into(), args.members.into());
    out.insert("negotiated".into(), negotiated.into());
    out.insert("deliveries".into(), received.into());
    out.insert("wire_bytes".into(), wire.into());
    out.insert(
        "bytes_per_delivery".into(),
        common::round3(per_delivery_bytes).into(),
    );
    out.insert(
        "server_cpu_us_per_delivery".into(),
        cpu.map(|c| Value::from(common::round3(c * 1e6 / received.max(1) as f64)))
            .unwrap_or(Value::Null),
    );
    common::print_json(out);
    Ok(())
}
