//! The shard's broadcast flush: broadcasts queued for the shard's members are written to their
//! sockets in passes, without waking each member's writer task, at most about once per window
//! per member.
//!
//! At a thousand members the cost of a broadcast is its writes. Each `send(2)` on a socket costs
//! the same whether it carries one message or twenty, and waking a member's writer for it adds a
//! poll of the connection's dispatcher and session. So the shard queues each frame for every
//! member, notes the members whose writer is parked, and writes their queues in a pass
//! (`Outbox::write_direct`). Quiet traffic goes out at once; under load every socket gets one
//! write per window carrying everything that arrived in it, and no message waits more than a
//! window once the load is steady.
//!
//! The members are spread over slots (by a hash of their session id), one per millisecond of the
//! window, and each slot's passes fall on its own grid: slot `i` of `n` is written at `i/n` of
//! every window. Had every member been written in one pass per window, the whole machine would
//! work through a thousand writes (and the peers through a thousand reads) at once, and the last
//! of them would wait for all the others: that wait was most of the p99 latency at 1,000
//! messages/s to 1,000 members. In slots, the same writes are spread evenly over the window.
//!
//! The window trades waiting against writes: each write costs both ends the same kernel work
//! whatever it carries, so a shorter window means more of them. On two cores shared with the
//! load client, at 200 to 1,000 messages/s to 1,000 members, 10 ms (the default) had the lowest
//! p99 among 5 to 12 ms: about 12 ms, against 14 ms at 8 ms and 15 ms at 5 ms.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    time::{Duration, Instant},
};

use crate::{outbox::Outbox, SessionId};

/// Spacing of the slots' grids: the timer's resolution.
const SLOT_SPACING: Duration = Duration::from_millis(1);
/// More slots than this would only add timers.
const MAX_SLOTS: u128 = 16;

/// The slots of one shard, and the start of their grids.
pub(super) struct Flush {
    window: Duration,
    epoch: Instant,
    slots: Box<[Slot]>,
}

/// The members with frames this slot's next pass writes, and when its last pass ran.
#[derive(Default)]
struct Slot {
    parked: RefCell<Vec<Rc<Outbox>>>,
    last_pass: Cell<Option<Instant>>,
}

impl Flush {
    pub(super) fn new(window: Duration) -> Rc<Flush> {
        let slots = (window.as_nanos() / SLOT_SPACING.as_nanos()).clamp(1, MAX_SLOTS) as usize;
        Rc::new(Flush {
            window,
            epoch: Instant::now(),
            slots: (0..slots).map(|_| Slot::default()).collect(),
        })
    }

    /// Remembers a member whose writer is parked with a frame queued, and makes sure a pass of
    /// its slot is coming.
    pub(super) fn add(self: &Rc<Self>, id: SessionId, outbox: &Rc<Outbox>) {
        let index = self.slot_of(id);
        let first = {
            let mut parked = self.slots[index].parked.borrow_mut();
            parked.push(outbox.clone());
            parked.len() == 1
        };
        if first {
            self.schedule(index);
        }
    }

    /// The member's slot. Ids are handed out in turn to all workers, so one worker's ids can
    /// share a pattern (with two workers, all even or all odd): they are hashed first.
    fn slot_of(&self, id: SessionId) -> usize {
        let hash = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        (hash % self.slots.len() as u64) as usize
    }

    /// Runs the slot's pass after the current task (so this turn's other broadcasts join it),
    /// or at the slot's time (see [`Flush::due`]).
    fn schedule(self: &Rc<Self>, index: usize) {
        let due = self.due(index, Instant::now());
        let flush = self.clone();
        actix::spawn(async move {
            if let Some(due) = due {
                actix::clock::sleep_until(due.into()).await;
            }
            flush.pass(index);
        });
    }

    /// When the slot's next pass runs: `None` (at once) if its last pass is at least a window
    /// old, else on its grid, at least half a window after its last pass. In steady load that is
    /// one window after it; only the first pass after a quiet spell (which went out at once,
    /// off the grid) may be followed by one up to a window and a half later.
    fn due(&self, index: usize, now: Instant) -> Option<Instant> {
        let last = self.slots[index].last_pass.get()?;
        if now >= last + self.window {
            return None;
        }
        let window = self.window.as_nanos();
        let first_of_slot = self.epoch + self.window * index as u32 / self.slots.len() as u32;
        let earliest = (last + self.window / 2).max(now);
        let since = earliest.saturating_duration_since(first_of_slot).as_nanos();
        let windows = since.div_ceil(window);
        Some(first_of_slot + Duration::from_nanos((windows * window) as u64))
    }

    fn pass(&self, index: usize) {
        let slot = &self.slots[index];
        slot.last_pass.set(Some(Instant::now()));
        let mut parked = std::mem::take(&mut *slot.parked.borrow_mut());
        for outbox in &parked {
            outbox.write_direct();
        }
        parked.clear();
        // Keep the list's storage for the next pass, unless a rare burst made it large.
        let mut current = slot.parked.borrow_mut();
        if current.is_empty() && parked.capacity() <= 4096 {
            *current = parked;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_window_of_five_ms_has_five_slots_one_ms_apart() {
        let flush = Flush::new(ms(5));
        assert_eq!(flush.slots.len(), 5);
        let epoch = flush.epoch;
        for index in 0..5 {
            // Long after the epoch, in steady load: one window after the last pass, on the grid.
            let last = epoch + ms(100 + index as u64);
            flush.slots[index].last_pass.set(Some(last));
            assert_eq!(flush.due(index, last + ms(1)), Some(last + ms(5)));
        }
    }

    #[test]
    fn a_slot_quiet_for_a_window_is_written_at_once() {
        let flush = Flush::new(ms(5));
        let epoch = flush.epoch;
        assert_eq!(flush.due(2, epoch + ms(3)), None, "never written");
        flush.slots[2].last_pass.set(Some(epoch + ms(10)));
        assert_eq!(flush.due(2, epoch + ms(15)), None);
        assert!(flush.due(2, epoch + ms(14)).is_some());
    }

    #[test]
    fn after_a_pass_off_the_grid_the_next_waits_half_a_window_then_joins_the_grid() {
        let flush = Flush::new(ms(5));
        let epoch = flush.epoch;
        // Slot 2's grid: 2, 7, 12, 17 ms... A pass at 11.5 ms (a quiet spell's first broadcast).
        flush.slots[2]
            .last_pass
            .set(Some(epoch + Duration::from_micros(11_500)));
        // Half a window later is 14 ms: the next grid time is 17 ms.
        assert_eq!(flush.due(2, epoch + ms(12)), Some(epoch + ms(17)));
        // A pass at 10.5 ms: half a window later is 13 ms, and the grid has 12 then 17 ms.
        flush.slots[2]
            .last_pass
            .set(Some(epoch + Duration::from_micros(10_500)));
        assert_eq!(flush.due(2, epoch + ms(11)), Some(epoch + ms(17)));
        // A pass at 9 ms: half a window later is 11.5 ms: 12 ms.
        flush.slots[2].last_pass.set(Some(epoch + ms(9)));
        assert_eq!(flush.due(2, epoch + ms(10)), Some(epoch + ms(12)));
    }

    #[test]
    fn one_workers_ids_fill_all_its_slots_evenly() {
        let flush = Flush::new(ms(10));
        let mut counts = [0usize; 10];
        // With two workers taking turns, one of them gets every other id.
        for id in (0..10_000u64).map(|n| 2 * n) {
            counts[flush.slot_of(id)] += 1;
        }
        for (slot, count) in counts.iter().enumerate() {
            assert!(
                (800..=1200).contains(count),
                "slot {slot} has {count} of 10,000: {counts:?}"
            );
        }
    }

    #[test]
    fn without_a_window_every_pass_is_at_once() {
        let flush = Flush::new(Duration::ZERO);
        assert_eq!(flush.slots.len(), 1);
        flush.slots[0].last_pass.set(Some(flush.epoch));
        assert_eq!(flush.due(0, flush.epoch), None);
    }

    #[test]
    fn long_windows_have_at_most_sixteen_slots() {
        let flush = Flush::new(Duration::from_secs(2));
        assert_eq!(flush.slots.len(), 16);
        let epoch = flush.epoch;
        // Slot 4's grid: 0.5 s, 2.5 s, 4.5 s...
        flush.slots[4].last_pass.set(Some(epoch + ms(2_400)));
        assert_eq!(flush.due(4, epoch + ms(2_401)), Some(epoch + ms(4_500)));
    }
}
