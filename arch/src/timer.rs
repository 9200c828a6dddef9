//! The EL1 virtual generic timer (CNTV): a periodic tick per CPU, and a monotonic clock.
//!
//! The frequency comes from CNTFRQ_EL0 (62.5 MHz on older QEMU CPU models, 1 GHz on newer
//! ones). The virtual timer works whether the kernel entered at EL1 or EL2 (boot zeroes
//! CNTVOFF_EL2 on the EL2 path).

use aarch64_cpu::registers::{
    Readable, Writeable, CNTFRQ_EL0, CNTVCT_EL0, CNTV_CTL_EL0, CNTV_TVAL_EL0,
};
use core::sync::atomic::{AtomicU64, Ordering};

static TICK_INTERVAL: AtomicU64 = AtomicU64::new(0);

/// Counter frequency (CNTFRQ_EL0).
pub fn frequency_hz() -> u64 {
    CNTFRQ_EL0.get()
}

/// Counter ticks since boot (virtual count).
pub fn counter() -> u64 {
    CNTVCT_EL0.get()
}

/// Nanoseconds since the counter started.
pub fn now_ns() -> u64 {
    let f = frequency_hz().max(1);
    ((counter() as u128) * 1_000_000_000 / f as u128) as u64
}

/// Starts this CPU's periodic tick at `hz` (the caller enables the timer's PPI at the GIC).
pub fn start_tick(hz: u64) {
    let interval = (frequency_hz() / hz.max(1)).max(1);
    TICK_INTERVAL.store(interval, Ordering::Relaxed);
    CNTV_TVAL_EL0.set(interval);
    CNTV_CTL_EL0.write(CNTV_CTL_EL0::ENABLE::SET + CNTV_CTL_EL0::IMASK::CLEAR);
}

/// Re-arms the tick; call from the timer interrupt handler.
pub fn rearm_tick() {
    CNTV_TVAL_EL0.set(TICK_INTERVAL.load(Ordering::Relaxed));
}

/// Busy-waits `us` microseconds.
pub fn delay_us(us: u64) {
    let end = counter() + frequency_hz() * us / 1_000_000;
    while counter() < end {
        core::hint::spin_loop();
    }
}
