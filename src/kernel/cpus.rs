//! What each CPU reports: its MPIDR affinity, whether it came online, and its timer ticks.
//!
//! Written by bring-up (`kernel_main`, `start_secondaries`, `cpu_online`) and by the tick
//! on each CPU; read by the `cpus` command and by the hog (how many CPUs there are). Plain
//! atomics, no lock: every field is read on its own, and `online` is published with
//! Release after the CPU's other fields (bring-up waits for it with Acquire).

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use hotmem_arch::layout::MAX_CPUS;

/// What the shell shows per CPU.
pub struct CpuState {
    /// MPIDR affinity fields.
    pub mpidr: AtomicU64,
    /// Came online (its tick and interrupts are running).
    pub online: AtomicBool,
    /// Timer ticks taken on it.
    pub ticks: AtomicU64,
}

/// One record per CPU index.
pub static CPUS: [CpuState; MAX_CPUS] = [const {
    CpuState {
        mpidr: AtomicU64::new(0),
        online: AtomicBool::new(false),
        ticks: AtomicU64::new(0),
    }
}; MAX_CPUS];
/// Number of CPUs the DT lists (capped at MAX_CPUS).
pub static NR_CPUS: AtomicUsize = AtomicUsize::new(1);

/// What `cpus` shows about one CPU.
pub struct CpuRecord {
    /// MPIDR affinity fields.
    pub mpidr: u64,
    /// Came online.
    pub online: bool,
    /// Timer ticks taken on it.
    pub ticks: u64,
}

/// One record per CPU the DT lists (capped at `MAX_CPUS`), by index.
pub fn records() -> impl Iterator<Item = CpuRecord> {
    CPUS.iter()
        .take(NR_CPUS.load(Ordering::Relaxed))
        .map(|c| CpuRecord {
            mpidr: c.mpidr.load(Ordering::Relaxed),
            online: c.online.load(Ordering::Relaxed),
            ticks: c.ticks.load(Ordering::Relaxed),
        })
}
