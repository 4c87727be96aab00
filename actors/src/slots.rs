//! The cap on open WebSocket sessions (`--max-connections`).
//!
//! A handshake takes a slot before the session starts, and the session gives it back when it
//! ends (the slot is dropped with the session), so the count is exact even under a burst of
//! concurrent handshakes.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

/// The slots of one server.
#[derive(Debug)]
pub struct SessionSlots {
    max: usize,
    used: AtomicUsize,
}

/// One taken slot; dropping it frees the slot.
#[derive(Debug)]
pub struct SessionSlot(Arc<SessionSlots>);

impl SessionSlots {
    pub fn new(max: usize) -> Arc<SessionSlots> {
        Arc::new(SessionSlots {
            max,
            used: AtomicUsize::new(0),
        })
    }

    /// Takes a slot, or `None` when all are in use.
    pub fn try_take(self: &Arc<Self>) -> Option<SessionSlot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.max).then_some(used + 1)
            })
            .ok()
            .map(|_| SessionSlot(self.clone()))
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_and_come_back() {
        let slots = SessionSlots::new(2);
        let a = slots.try_take().unwrap();
        let _b = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        drop(a);
        assert_eq!(slots.in_use(), 1);
        assert!(slots.try_take().is_some());
    }
}
