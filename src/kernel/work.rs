//! Deferred work: interrupt handlers note that something must be done, and the work runs
//! later in thread context, on whichever CPU next comes out of its idle wait (CPU 0 in the
//! shell's input wait, the other CPUs in their idle loops).
//!
//! State: `PENDING` (set by interrupt handlers and by the timer when a back-off deadline
//! passes), `RETRY_AT` (earliest back-off deadline in ns, `u64::MAX` when none) and `RUNNING`
//! (one runner at a time; a runner that finds work pending again after its pass runs again).
//! The timer tick turns a passed deadline into `PENDING`, so a back-off costs no polling of
//! the device.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use hotmem_arch::timer;

static PENDING: AtomicBool = AtomicBool::new(false);
static RUNNING: AtomicBool = AtomicBool::new(false);
static RETRY_AT: AtomicU64 = AtomicU64::new(u64::MAX);

/// Asks for the work to run soon (callable from interrupt context).
pub fn schedule() {
    PENDING.store(true, Ordering::Release);
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

/// Runs the pending work, if any and if no other CPU is running it. Thread context only.
pub fn run_pending() {
    while PENDING.load(Ordering::Acquire) {
        if RUNNING.swap(true, Ordering::Acquire) {
            return;
        }
        PENDING.store(false, Ordering::Release);
        super::vmem::work();
        RUNNING.store(false, Ordering::Release);
    }
}
