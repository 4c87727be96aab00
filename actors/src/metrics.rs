//! Process-wide counters of the WebSocket core, read by the server's metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

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

/// The number of open WebSocket sessions: a gauge that can also be awaited until it reaches
/// zero (the graceful drain waits on it instead of polling).
#[derive(Debug)]
pub struct OpenSessions {
    count: AtomicU64,
    /// Woken (all waiters) each time the count drops to zero.
    none_left: Notify,
}

impl OpenSessions {
    pub const fn new() -> OpenSessions {
        OpenSessions {
            count: AtomicU64::new(0),
            none_left: Notify::const_new(),
        }
    }

    pub fn inc(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    pub fn dec(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.none_left.notify_waiters();
        }
    }

    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Completes when no session is open (at once if none is). No wakeup can be lost: the
    /// `Notified` future is created before the count is read, and `notify_waiters` wakes every
    /// such future that exists when it is called, polled or not, so a last session that ends
    /// between the check and the wait still wakes this. A session that opens afterwards makes
    /// it wait for that one too.
    pub async fn none_open(&self) {
        loop {
            let notified = self.none_left.notified();
            if self.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Default for OpenSessions {
    fn default() -> OpenSessions {
        OpenSessions::new()
    }
}

/// Most protocols the per-protocol gauges can track (checked by a test of `protocols::BUILTIN`, and
/// by the builder of an application's table).
pub const MAX_PROTOCOLS: usize = 32;

/// Close codes the server sends, counted by code.
const TRACKED_CLOSE_CODES: [u16; 7] = [1000, 1001, 1002, 1007, 1008, 1009, 1011];

#[derive(Debug)]
pub struct Metrics {
    pub sessions_open: OpenSessions,
    /// Open sessions by protocol, indexed by the protocol's position in `protocols::installed()`.
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
            sessions_open: OpenSessions::new(),
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

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::OpenSessions;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn none_open_completes_when_the_last_session_ends() {
        let sessions = Arc::new(OpenSessions::new());
        runtime().block_on(async {
            // None open: at once.
            sessions.none_open().await;
            sessions.inc();
            sessions.inc();
            let waiter = tokio::spawn({
                let sessions = sessions.clone();
                async move { sessions.none_open().await }
            });
            tokio::task::yield_now().await;
            sessions.dec();
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished(), "one session is still open");
            sessions.dec();
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("woken when the last session ended")
                .unwrap();
        });
    }

    /// The last session ends on another thread while the waiter checks the count: the wakeup
    /// must not be lost (a lost one would hang until the timeout).
    #[test]
    fn a_last_session_ending_during_the_check_is_not_missed() {
        let runtime = runtime();
        for _ in 0..2000 {
            let sessions = Arc::new(OpenSessions::new());
            sessions.inc();
            let ender = std::thread::spawn({
                let sessions = sessions.clone();
                move || sessions.dec()
            });
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), sessions.none_open())
                    .await
                    .expect("woken by the last session's end");
            });
            ender.join().unwrap();
            assert_eq!(sessions.get(), 0);
        }
    }
}
