//! Deferred work: interrupt handlers note that something must be done, and the `worker`
//! task does it in thread context (it may sleep and be preempted like any task).
//!
//! State: `PENDING` (set by interrupt handlers and by the timer when a back-off deadline
//! passes), `RETRY_AT` (earliest back-off deadline in ns, `u64::MAX` when none). The worker
//! sleeps on `WAKE` until work is pending (or an exited task needs reaping, see
//! [`super::task::reap`]); [`schedule`] sets `PENDING` and wakes it, from any context. Work
//! that arrives while the worker runs sets `PENDING` again, so it runs another pass. The
//! timer tick turns a passed deadline into `PENDING`, so a back-off costs no polling of the
//! device. `WAKE` is a leaf lock (see `task`), so `schedule` may be called under any lock.

use super::task::{self, WaitQueue};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use hotmem_arch::timer;

static PENDING: AtomicBool = AtomicBool::new(false);
static RETRY_AT: AtomicU64 = AtomicU64::new(u64::MAX);
static WAKE: WaitQueue = WaitQueue::new();

/// Asks for the work to run soon (callable from interrupt context).
pub fn schedule() {
    PENDING.store(true, Ordering::Release);
    WAKE.wake_all();
}

/// Asks for the work to run at `at_ns` (the earliest of all requests wins).
pub fn schedule_at(at_ns: u64) {
    RETRY_AT.fetch_min(at_ns, Ordering::AcqRel);
}

/// From the timer tick: turns a passed deadline into pending work.
pub fn tick() {
    let at = RETRY_AT.load(Ordering::Acquire);
    if at != u64::MAX && timer::now_ns() >= at {
        RETRY_AT.store(u64::MAX, Ordering::Release);
        schedule();
    }
}

/// Wakes the worker without new work (it re-checks what there is to do, e.g. reaping).
pub fn kick() {
    WAKE.wake_all();
}

/// The `worker` task's body.
pub fn worker() {
    loop {
        WAKE.wait_until(|| PENDING.load(Ordering::Acquire) || task::reap_pending());
        if task::reap_pending() {
            task::reap();
        }
        if PENDING.swap(false, Ordering::AcqRel) {
            super::vmem::work();
        }
    }
}
