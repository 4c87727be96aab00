//! Process-wide counters of the WebSocket core, read by the server's metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (open connections).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub const fn new() -> Gauge {
        Gauge(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Most protocols the per-protocol gauges can track (checked by a test of `protocols::ALL`).
pub const MAX_PROTOCOLS: usize = 32;

/// Close codes the server sends, counted by code.
const TRACKED_CLOSE_CODES: [u16; 7] = [1000, 1001, 1002, 1007, 1008, 1009, 1011];

#[derive(Debug)]
pub struct Metrics {
    pub sessions_open: Gauge,
    /// Open sessions by protocol, indexed by the protocol's position in `protocols::ALL`.
    pub sessions_by_protocol: [Gauge; MAX_PROTOCOLS],
    pub sessions_opened: Counter,
    /// Upgrades refused because `--max-connections` sessions were open.
    pub sessions_refused: Counter,
    /// Handshakes refused for their `Origin` (`--allowed-origins`).
    pub refused_origin: Counter,
    /// Handshakes refused for their token (missing, invalid, expired).
    pub refused_token: Counter,
    /// Handshakes refused because the token does not allow the room asked for.
    pub refused_room: Counter,
    pub messages_out: Counter,
    pub bytes_out: Counter,
    pub messages_in: Counter,
    pub bytes_in: Counter,
    pub broadcasts: Counter,
    pub broadcast_deliveries: Counter,
    pub slow_consumer_closes: Counter,
    pub slow_consumer_drops: Counter,
    pub sockets_killed: Counter,
    close_codes: [Counter; TRACKED_CLOSE_CODES.len()],
    pub close_codes_other: Counter,
}

impl Metrics {
    const fn new() -> Metrics {
        Metrics {
            sessions_open: Gauge::new(),
            sessions_by_protocol: [const { Gauge::new() }; MAX_PROTOCOLS],
            sessions_opened: Counter::new(),
            sessions_refused: Counter::new(),
            refused_origin: Counter::new(),
            refused_token: Counter::new(),
            refused_room: Counter::new(),
            messages_out: Counter::new(),
            bytes_out: Counter::new(),
            messages_in: Counter::new(),
            bytes_in: Counter::new(),
            broadcasts: Counter::new(),
            broadcast_deliveries: Counter::new(),
            slow_consumer_closes: Counter::new(),
            slow_consumer_drops: Counter::new(),
            sockets_killed: Counter::new(),
            close_codes: [const { Counter::new() }; TRACKED_CLOSE_CODES.len()],
            close_codes_other: Counter::new(),
        }
    }

    pub fn record_close_code(&self, code: u16) {
        match TRACKED_CLOSE_CODES
            .iter()
            .position(|&tracked| tracked == code)
        {
            Some(index) => self.close_codes[index].inc(),
            None => self.close_codes_other.inc(),
        }
    }

    /// (code, count) for each tracked close code.
    pub fn close_codes(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        TRACKED_CLOSE_CODES
            .iter()
            .zip(&self.close_codes)
            .map(|(code, counter)| (*code, counter.get()))
    }
}

pub static METRICS: Metrics = Metrics::new();
