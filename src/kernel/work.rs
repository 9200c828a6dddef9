//! Deferred work: interrupt handlers, the timer tick and other tasks note that something
//! must be done, and the `worker` task does it in thread context (it may sleep and be
//! preempted like any task). The worker knows no subsystem: it runs the [`Work`] items
//! registered with it ([`register`]); which items exist and who schedules them is wired in
//! `kernel/mod.rs`.
//!
//! State per [`Work`]: `pending` (set by [`Work::schedule`], from any context, and by the
//! timer tick when a back-off deadline passes) and `retry_at` (earliest back-off deadline
//! in ns, `u64::MAX` when none). The worker sleeps on `WAKE` until a registered item is
//! pending, then runs each pending item once, in registration order, clearing its flag
//! before it runs. Work that arrives while an item runs sets the flag again, so the item
//! runs another pass. The tick turns a passed deadline into `pending`, so a back-off costs
//! no polling of the device.
//!
//! Registry: a fixed table of [`MAX_WORKS`] `spin::Once` cells, filled at boot and only
//! read afterwards (a slot is claimed with an atomic counter, so filling it needs no lock).
//! An item scheduled before it is registered keeps its flag and runs once it is.
//!
//! Locks: `WAKE` is a leaf lock (see `task`), so `schedule` may be called under any lock
//! and from interrupt handlers; the registry and the flags are lock-free.

use super::task::WaitQueue;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use hotmem_arch::timer;

/// Most items the worker can hold.
pub const MAX_WORKS: usize = 4;

static WAKE: WaitQueue = WaitQueue::new();
static WORKS: [spin::Once<&'static Work>; MAX_WORKS] = [const { spin::Once::new() }; MAX_WORKS];
static NR_WORKS: AtomicUsize = AtomicUsize::new(0);

/// One kind of deferred work: its body and the flags that say when it is due.
pub struct Work {
    run: fn(),
    pending: AtomicBool,
    retry_at: AtomicU64,
}

impl Work {
    /// Work whose body is `run`; it runs once it is [`register`]ed and scheduled.
    pub const fn new(run: fn()) -> Work {
        Work {
            run,
            pending: AtomicBool::new(false),
            retry_at: AtomicU64::new(u64::MAX),
        }
    }

    /// Asks for the work to run soon (callable from interrupt context).
    pub fn schedule(&self) {
        self.pending.store(true, Ordering::Release);
        WAKE.wake_all();
    }

    /// Asks for the work to run at `at_ns` (the earliest of all requests wins).
    pub fn schedule_at(&self, at_ns: u64) {
        self.retry_at.fetch_min(at_ns, Ordering::AcqRel);
    }

    /// From the timer tick: turns a passed deadline into pending work.
    fn tick(&self) {
        let at = self.retry_at.load(Ordering::Acquire);
        if at != u64::MAX && timer::now_ns() >= at {
            self.retry_at.store(u64::MAX, Ordering::Release);
            self.schedule();
        }
    }
}

/// Adds `work` to what the worker runs (after the items registered before it).
///
/// Panics when [`MAX_WORKS`] items are registered already: the table is sized for the
/// kernel's own wiring.
pub fn register(work: &'static Work) {
    let slot = NR_WORKS.fetch_add(1, Ordering::AcqRel);
    assert!(
        slot < MAX_WORKS,
        "work: more than {MAX_WORKS} items registered"
    );
    WORKS[slot].call_once(|| work);
    // It may have been scheduled before it was registered.
    WAKE.wake_all();
}

/// The registered items, in registration order.
fn registered() -> impl Iterator<Item = &'static Work> {
    WORKS.iter().filter_map(|w| w.get().copied())
}

/// From the timer tick: turns passed deadlines into pending work.
pub fn tick() {
    for w in registered() {
        w.tick();
    }
}

/// The `worker` task's body.
pub fn worker() {
    loop {
        WAKE.wait_until(|| registered().any(|w| w.pending.load(Ordering::Acquire)));
        for w in registered() {
            if w.pending.swap(false, Ordering::AcqRel) {
                (w.run)();
            }
        }
    }
}
