//! A real `redis-server` for the cluster tests: started on a free loopback port without
//! persistence, stopped by its PID when dropped; it can be killed, restarted on the same port,
//! frozen (SIGSTOP) and thawed (SIGCONT), and asked any command over a minimal RESP client.
//!
//! When `redis-server` is not installed the tests that need it skip with a printed message,
//! unless `SWITCHBOARD_REQUIRE_REDIS=1` is set (CI), in which case they fail.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{send_signal, TempDir};

/// How long a fresh `redis-server` may take to answer.
const START: Duration = Duration::from_secs(10);
/// How long one command may take.
const COMMAND: Duration = Duration::from_secs(5);

/// The `redis-server` binary: `SWITCHBOARD_REDIS_SERVER`, else the first on `PATH`, else
/// Debian's `/usr/bin/redis-server`; `None` when there is none.
pub fn redis_server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SWITCHBOARD_REDIS_SERVER") {
        return Some(PathBuf::from(path)).filter(|path| path.is_file());
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("redis-server"));
    on_path
        .chain([PathBuf::from("/usr/bin/redis-server")])
        .find(|path| path.is_file())
}

/// Whether a missing `redis-server` fails the tests instead of skipping them.
fn redis_required() -> bool {
    std::env::var("SWITCHBOARD_REQUIRE_REDIS").is_ok_and(|value| value == "1")
}

/// The `redis-server` binary, or `None` after printing why `test` is skipped (a panic instead
/// when `SWITCHBOARD_REQUIRE_REDIS=1`).
pub fn redis_server_or_skip(test: &str) -> Option<PathBuf> {
    match redis_server_binary() {
        Some(path) => Some(path),
        None if redis_required() => panic!(
            "{test}: redis-server is not installed and SWITCHBOARD_REQUIRE_REDIS=1 requires it \
             (Debian: apt-get install redis-server)"
        ),
        None => {
            eprintln!(
                "SKIPPED {test}: redis-server is not installed (Debian: apt-get install \
                 redis-server; SWITCHBOARD_REQUIRE_REDIS=1 turns this skip into a failure)"
            );
            None
        }
    }
}

/// A port on 127.0.0.1 that nothing listened on a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// A reply in the Redis serialization protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The reply as text (simple, bulk or error string).
    pub fn text(&self) -> Option<String> {
        match self {
            Resp::Simple(text) | Resp::Error(text) => Some(text.clone()),
            Resp::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Resp::Int(value) => Some(*value),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Resp] {
        match self {
            Resp::Array(Some(items)) => items,
            _ => &[],
        }
    }
}

/// A running `redis-server`, killed (by PID) when dropped.
pub struct Redis {
    binary: PathBuf,
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Redis {
    /// Starts a `redis-server` on a free port, or returns `None` after printing why `test` is
    /// skipped (see [`redis_server_or_skip`]).
    pub fn start_or_skip(test: &str) -> Option<Redis> {
        let binary = redis_server_or_skip(test)?;
        let mut last_failure = String::new();
        // Another process may take the free port between the probe and the start: try again.
        for _ in 0..5 {
            match Redis::start_with_binary(binary.clone(), free_port()) {
                Ok(redis) => return Some(redis),
                Err(failure) => last_failure = failure,
            }
        }
        panic!("redis-server did not start: {last_failure}");
    }

    /// Starts a `redis-server` on `port` (which must be free).
    pub fn start_on_port(port: u16) -> Result<Redis, String> {
        let binary = redis_server_binary().ok_or("redis-server is not installed")?;
        Redis::start_with_binary(binary, port)
    }

    fn start_with_binary(binary: PathBuf, port: u16) -> Result<Redis, String> {
        let mut redis = Redis {
            binary,
            child: None,
            port,
            dir: TempDir::new("redis"),
            log: Arc::new(Mutex::new(Vec::new())),
        };
        redis.spawn()?;
        Ok(redis)
    }

    /// Starts the process on `self.port` and waits until it answers.
    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut child = Command::new(&self.binary)
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--daemonize", "no", "--logfile", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("start {}: {error}", self.binary.display()))?;
        for output in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = self.log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line);
                }
            });
        }
        let deadline = Instant::now() + START;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server on port {port} exited with {status}; log: {:?}",
                    self.log()
                ));
            }
            // Ready when it answers, and it is this process that answers (not another one that
            // took the port).
            if let Some(answering) = command_at(self.addr(), &["INFO", "server"])
                .ok()
                .and_then(|reply| reply.text())
                .and_then(|info| {
                    info.lines()
                        .find_map(|line| line.strip_prefix("process_id:"))
                        .and_then(|pid| pid.trim().parse::<u32>().ok())
                })
            {
                if answering == child.id() {
                    self.child = Some(child);
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {port} did not answer within {START:?}; log: {:?}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The URL for `--broker`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The PID of the running process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server is running").id()
    }

    /// Everything the server has logged (all of its processes, in order).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Kills the process with SIGKILL (it keeps nothing: no persistence) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new, empty `redis-server` on the same port (killing the old one if it still
    /// runs), retrying while the port is not yet free again.
    pub fn restart_on_same_port(&mut self) {
        self.kill();
        let deadline = Instant::now() + START;
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(failure) if Instant::now() >= deadline => {
                    panic!(
                        "redis-server did not restart on port {}: {failure}",
                        self.port
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Freezes the process (SIGSTOP): its sockets stay open, it answers nothing.
    pub fn stop(&self) {
        send_signal(self.pid(), libc::SIGSTOP);
    }

    /// Thaws a frozen process (SIGCONT).
    pub fn cont(&self) {
        send_signal(self.pid(), libc::SIGCONT);
    }

    /// Runs one command on a fresh connection and returns the reply (an error reply is
    /// `Ok(Resp::Error(..))`; `Err` is a connection failure).
    pub fn command(&self, args: &[&str]) -> Result<Resp, String> {
        command_at(self.addr(), args)
    }

    /// A command that must succeed.
    pub fn query(&self, args: &[&str]) -> Resp {
        match self.command(args) {
            Ok(Resp::Error(error)) => panic!("redis {args:?}: {error}"),
            Ok(reply) => reply,
            Err(failure) => panic!("redis {args:?}: {failure}"),
        }
    }

    /// The fields of an `INFO` section (e.g. `stats`, `commandstats`, `clients`).
    pub fn info(&self, section: &str) -> HashMap<String, String> {
        let text = self.query(&["INFO", section]).text().unwrap_or_default();
        text.lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(key, value)| (key.to_owned(), value.trim().to_owned()))
            .collect()
    }

    /// A numeric field of an `INFO` section (0 when absent).
    pub fn info_number(&self, section: &str, field: &str) -> u64 {
        self.info(section)
            .get(field)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    }

    /// `CLIENT LIST`, one map of fields per connection.
    pub fn clients(&self) -> Vec<HashMap<String, String>> {
        let text = self.query(&["CLIENT", "LIST"]).text().unwrap_or_default();
        text.lines()
            .map(|line| {
                line.split_whitespace()
                    .filter_map(|field| field.split_once('='))
                    .map(|(key, value)| (key.to_owned(), value.to_owned()))
                    .collect()
            })
            .collect()
    }

    /// The channel and pattern subscriptions (`sub` + `ssub` + `psub`) that Redis holds for
    /// the connections of the process `pid`, and how many connections it has to this Redis.
    pub fn subscriptions_of(&self, pid: u32) -> (u64, usize) {
        let ports = connections_to(pid, self.port);
        let mut subscriptions = 0;
        for client in self.clients() {
            let port = client
                .get("addr")
                .and_then(|addr| addr.rsplit(':').next())
                .and_then(|port| port.parse::<u16>().ok());
            if port.is_some_and(|port| ports.contains(&port)) {
                for field in ["sub", "ssub", "psub"] {
                    subscriptions += client
                        .get(field)
                        .and_then(|value| value.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
        (subscriptions, ports.len())
    }

    /// Closes, from the Redis side, every connection that the process `pid` has to this Redis
    /// (`CLIENT KILL ADDR`); returns how many were closed.
    pub fn kill_connections_of(&self, pid: u32) -> usize {
        connections_to(pid, self.port)
            .into_iter()
            .filter(|port| {
                let addr = format!("127.0.0.1:{port}");
                // The filter form answers the number of connections closed.
                self.command(&["CLIENT", "KILL", "ADDR", &addr]) == Ok(Resp::Int(1))
            })
            .count()
    }

    /// Channels with at least one subscriber, plain and sharded (`PUBSUB CHANNELS` and
    /// `PUBSUB SHARDCHANNELS`).
    pub fn channels(&self) -> Vec<String> {
        let mut channels = Vec::new();
        for kind in ["CHANNELS", "SHARDCHANNELS"] {
            if let Ok(reply) = self.command(&["PUBSUB", kind]) {
                channels.extend(reply.items().iter().filter_map(Resp::text));
            }
        }
        channels.sort();
        channels
    }

    /// The subscribers of a channel, plain plus sharded (`PUBSUB NUMSUB` + `SHARDNUMSUB`).
    pub fn subscribers(&self, channel: &str) -> i64 {
        ["NUMSUB", "SHARDNUMSUB"]
            .iter()
            .filter_map(|kind| self.command(&["PUBSUB", kind, channel]).ok())
            .filter_map(|reply| reply.items().get(1).and_then(Resp::int))
            .sum()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A frozen process still dies of SIGKILL; thaw it anyway so nothing lingers.
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) only takes plain integers.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
        }
        self.kill();
    }
}

/// Runs one command against the Redis at `addr` on a fresh connection.
pub fn command_at(addr: SocketAddr, args: &[&str]) -> Result<Resp, String> {
    command_within(addr, args, COMMAND)
}

/// Runs one command against the Redis at `addr` on a fresh connection, giving up after `limit`
/// for each step (connect, write, read).
pub fn command_within(addr: SocketAddr, args: &[&str], limit: Duration) -> Result<Resp, String> {
    let mut stream = TcpStream::connect_timeout(&addr, limit).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(limit))
        .and_then(|()| stream.set_write_timeout(Some(limit)))
        .map_err(|e| e.to_string())?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request).map_err(|e| e.to_string())?;
    read_reply(&mut BufReader::new(stream))
}

/// Reads one reply.
pub fn read_reply(reader: &mut impl BufRead) -> Result<Resp, String> {
    let mut line = Vec::new();
    reader
        .read_until(b'\n', &mut line)
        .map_err(|e| e.to_string())?;
    if !line.ends_with(b"\r\n") {
        return Err(format!(
            "truncated reply: {:?}",
            String::from_utf8_lossy(&line)
        ));
    }
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let number = || {
        text.parse::<i64>()
            .map_err(|_| format!("bad number in reply: {text:?}"))
    };
    match line[0] {
        b'+' => Ok(Resp::Simple(text)),
        b'-' => Ok(Resp::Error(text)),
        b':' => Ok(Resp::Int(number()?)),
        b'$' => {
            let Ok(length) = usize::try_from(number()?) else {
                return Ok(Resp::Bulk(None));
            };
            let mut bytes = vec![0; length + 2];
            reader.read_exact(&mut bytes).map_err(|e| e.to_string())?;
            bytes.truncate(length);
            Ok(Resp::Bulk(Some(bytes)))
        }
        b'*' => {
            let Ok(count) = usize::try_from(number()?) else {
                return Ok(Resp::Array(None));
            };
            let items = (0..count)
                .map(|_| read_reply(reader))
                .collect::<Result<_, _>>()?;
            Ok(Resp::Array(Some(items)))
        }
        other => Err(format!("unknown reply type {:?}", other as char)),
    }
}

/// The local ports of the TCP connections that the process `pid` holds to 127.0.0.1:`port`
/// (from its descriptors in /proc and the kernel's table of IPv4 connections).
pub fn connections_to(pid: u32, port: u16) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
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
            if fields.len() < 10 || port_of(fields[2])? != port || fields[3] != "01" {
                return None;
            }
            inodes
                .contains(&fields[9].to_owned())
                .then(|| port_of(fields[1]))?
        })
        .collect()
}
