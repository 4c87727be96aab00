//! What the server knows about itself at run time, shared read-mostly by the handlers.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use switchboard_actors::slots::SessionSlots;

pub struct ServerState {
    pub started: Instant,
    pub workers: usize,
    pub fd_limit: u64,
    /// The WebSocket session cap (`--max-connections` or derived from the fd limit).
    pub slots: Arc<SessionSlots>,
    draining: AtomicBool,
}

impl ServerState {
    pub fn new(workers: usize, fd_limit: u64, slots: Arc<SessionSlots>) -> ServerState {
        ServerState {
            started: Instant::now(),
            workers,
            fd_limit,
            slots,
            draining: AtomicBool::new(false),
        }
    }

    /// Whether a graceful shutdown has begun (readiness then answers 503).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}
