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
//!
//! The load chooses whether the window applies at all. A shard that delivered fewer than
//! [`BUSY_DELIVERIES_PER_S`] frames a second over its last window writes every pass at the end of
//! the turn that queued it (corked for that turn, then uncorked): at light load no message waits
//! for a timer. Above that rate a write per delivery would cost more than the window's wait is
//! worth (each `send(2)` on loopback costs this machine 5 to 16 µs of kernel time, see the
//! README), so the grid above applies. The rate is of deliveries, not of writes, so the choice
//! does not feed back on itself, and a shard stays busy for [`BUSY_HOLD`] after its last busy
//! window, so the pauses of a publisher that waits for its subscribers do not switch it off.

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
/// Below this many deliveries a second (per shard, measured over the last window) every pass
/// goes out at the end of its turn. At about 5 µs of kernel time per small write, this rate of
/// writes is half a core: above it, batching pays for its wait.
pub(crate) const BUSY_DELIVERIES_PER_S: u64 = 100_000;
/// How long a shard stays busy after a window over [`BUSY_DELIVERIES_PER_S`]. A publisher held
/// back by its subscribers (a lag limit) pauses while they catch up, and the windows of those
/// pauses must not switch the window off between its bursts: that made a thousand subscribers
/// at full speed get a write per turn instead of per window, at less than half the rate.
const BUSY_HOLD: Duration = Duration::from_secs(1);

/// The slots of one shard, and the start of their grids.
pub(super) struct Flush {
    window: Duration,
    epoch: Instant,
    slots: Box<[Slot]>,
    load: Load,
}

/// The shard's delivery rate, counted over periods of one window: whether it is busy.
struct Load {
    period_start: Cell<Instant>,
    deliveries: Cell<u64>,
    /// Busy until then: [`BUSY_HOLD`] after the last period over the busy rate.
    busy_until: Cell<Option<Instant>>,
}

impl Load {
    fn new(now: Instant) -> Load {
        Load {
            period_start: Cell::new(now),
            deliveries: Cell::new(0),
            busy_until: Cell::new(None),
        }
    }

    /// Counts deliveries; at the end of each period, decides whether the shard is busy.
    fn count(&self, deliveries: u64, window: Duration, now: Instant) {
        self.deliveries.set(self.deliveries.get() + deliveries);
        let elapsed = now.saturating_duration_since(self.period_start.get());
        if elapsed >= window {
            let per_s =
                u128::from(self.deliveries.get()) * 1_000_000_000 / elapsed.as_nanos().max(1);
            if per_s >= u128::from(BUSY_DELIVERIES_PER_S) {
                if !self.is_busy(now) {
                    log::debug!("write window on: {per_s} deliveries/s");
                }
                self.busy_until.set(Some(now + BUSY_HOLD));
            }
            self.deliveries.set(0);
            self.period_start.set(now);
        }
    }

    fn is_busy(&self, now: Instant) -> bool {
        self.busy_until.get().is_some_and(|until| now < until)
    }
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
        let now = Instant::now();
        Rc::new(Flush {
            window,
            epoch: now,
            slots: (0..slots).map(|_| Slot::default()).collect(),
            load: Load::new(now),
        })
    }

    /// Counts a broadcast's deliveries toward the shard's load (see the module documentation).
    pub(super) fn count(&self, deliveries: usize) {
        if deliveries > 0 && !self.window.is_zero() {
            self.load
                .count(deliveries as u64, self.window, Instant::now());
        }
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

    /// When the slot's next pass runs: `None` (at once) if the shard is not busy or the slot's
    /// last pass is at least a window old, else on its grid, at least half a window after its last pass. In steady load that is
    /// one window after it; only the first pass after a quiet spell (which went out at once,
    /// off the grid) may be followed by one up to a window and a half later.
    fn due(&self, index: usize, now: Instant) -> Option<Instant> {
        if !self.load.is_busy(now) {
            return None;
        }
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

    /// A flush whose shard was found busy by a period that ended at `at`.
    fn busy_since(window: Duration, at: Duration) -> Rc<Flush> {
        let flush = Flush::new(window);
        flush.load.period_start.set(flush.epoch + at);
        flush
            .load
            .busy_until
            .set(Some(flush.epoch + at + BUSY_HOLD * 100));
        flush
    }

    #[test]
    fn a_window_of_five_ms_has_five_slots_one_ms_apart() {
        let flush = busy_since(ms(5), ms(100));
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
        let flush = busy_since(ms(5), ms(10));
        let epoch = flush.epoch;
        assert_eq!(flush.due(2, epoch + ms(3)), None, "never written");
        flush.slots[2].last_pass.set(Some(epoch + ms(10)));
        assert_eq!(flush.due(2, epoch + ms(15)), None);
        assert!(flush.due(2, epoch + ms(14)).is_some());
    }

    #[test]
    fn after_a_pass_off_the_grid_the_next_waits_half_a_window_then_joins_the_grid() {
        let flush = busy_since(ms(5), ms(8));
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
    fn a_shard_below_the_busy_rate_writes_every_pass_at_once() {
        let window = ms(10);
        let flush = Flush::new(window);
        let epoch = flush.epoch;
        // 99 deliveries per window is 9,900 a second: not busy.
        for n in 1..=10 {
            flush.load.count(99, window, epoch + ms(10 * n));
            flush.slots[0].last_pass.set(Some(epoch + ms(10 * n)));
            assert_eq!(flush.due(0, epoch + ms(10 * n) + ms(1)), None);
        }
        // 2,000 in a window is 200,000 a second: busy, so the grid applies.
        flush.load.count(2_000, window, epoch + ms(110));
        flush.slots[0].last_pass.set(Some(epoch + ms(110)));
        assert!(flush.due(0, epoch + ms(111)).is_some());
        // Still busy through the hold, even where a window was quiet (a paused publisher).
        flush.load.count(1, window, epoch + ms(150));
        flush.slots[0].last_pass.set(Some(epoch + ms(150)));
        assert!(flush.due(0, epoch + ms(151)).is_some());
        // Quiet for the whole hold after the last busy window: no longer busy.
        assert_eq!(flush.due(0, epoch + ms(110) + BUSY_HOLD), None);
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
        let flush = busy_since(Duration::from_secs(2), ms(2_000));
        assert_eq!(flush.slots.len(), 16);
        let epoch = flush.epoch;
        // Slot 4's grid: 0.5 s, 2.5 s, 4.5 s...
        flush.slots[4].last_pass.set(Some(epoch + ms(2_400)));
        assert_eq!(flush.due(4, epoch + ms(2_401)), Some(epoch + ms(4_500)));
    }
}
