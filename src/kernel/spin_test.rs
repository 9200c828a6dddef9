//! The `spin` test load: busy tasks, each in its own address space, that count iterations
//! until a common deadline.
//!
//! Each task maps a private counter page at the same virtual address ([`SPIN_VA`]) in its
//! own address space and writes its count there on every iteration; its result (count,
//! the set of CPUs it ran on, the CPU it ended on) goes to a shared slot. The command waits
//! on a wait queue until every task it started is done, then compares each counter page
//! (read through the linear map) with the task's count: equal counts show that every task
//! saw its own page at the shared address (TTBR0 switching), progress on one CPU shows
//! preemption, several CPUs show SMP. The shell prints the [`SpinReport`]. No lock of its
//! own: the results are atomics, each written by its task only.
//!
//! Memory: `spin` is a workload (`hotmem::mm::reserve`): counter pages, stacks and page
//! tables leave the kernel reserve and the floor alone. Every list is allocated (fallibly,
//! for all `n` tasks) before the first task starts, so a shortfall stops the command at
//! once with [`SpinFailure::NoMemory`] and the teardown allocates nothing.

use super::mem::mm_lock;
use super::task::{new_address_space, Builder, SpawnError, WaitQueue};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use hotmem::mm::AllocFlags;
use hotmem_arch::layout;
use hotmem_arch::pgtable::MapError;
use hotmem_arch::{cpu, timer};

/// Virtual address where each `spin` task maps its private counter page.
const SPIN_VA: u64 = 0x4000_0000;

struct SpinResult {
    iterations: AtomicU64,
    cpus: AtomicU64,
    last_cpu: AtomicUsize,
}

/// Why `spin` started fewer tasks than asked (it stops at the first failure).
pub enum SpinFailure {
    /// No counter page or no address space for task `task`.
    NoMemory {
        /// Index of the task that could not be set up.
        task: usize,
    },
    /// The counter page could not be mapped.
    Map(MapError),
    /// The task could not be spawned.
    Spawn(SpawnError),
}

/// What one `spin` task did.
pub struct SpinTask {
    /// The CPU it ended on.
    pub cpu: usize,
    /// Bit n set: it ran on CPU n.
    pub cpus: u64,
    /// Iterations it counted.
    pub iterations: u64,
    /// Its address space's ASID.
    pub asid: u16,
    /// Its counter page holds its own count (its address space was the one loaded).
    pub aspace_ok: bool,
}

/// What `spin` did: the tasks that ran, in order, and why the rest did not start.
pub struct SpinReport {
    /// Why fewer tasks than asked started, if so.
    pub failure: Option<SpinFailure>,
    /// One entry per task that ran.
    pub tasks: Vec<SpinTask>,
}

/// `spin <tasks> <ms>`: busy tasks, each in its own address space with a counter page at
/// the same virtual address, count iterations until a common deadline. Shows preemption
/// (all progress on one CPU), SMP (several CPUs) and TTBR0 switching (each task's page
/// holds its own count afterwards).
pub fn spin(n: usize, ms: u64) -> SpinReport {
    let deadline = timer::counter() + timer::frequency_hz() * ms / 1000;
    let mut results: Vec<SpinResult> = Vec::new();
    let mut spaces = Vec::new();
    let mut tasks = Vec::new();
    if results.try_reserve_exact(n).is_err()
        || spaces.try_reserve_exact(n).is_err()
        || tasks.try_reserve_exact(n).is_err()
    {
        return SpinReport {
            failure: Some(SpinFailure::NoMemory { task: 0 }),
            tasks,
        };
    }
    results.extend((0..n).map(|_| SpinResult {
        iterations: AtomicU64::new(0),
        cpus: AtomicU64::new(0),
        last_cpu: AtomicUsize::new(0),
    }));
    let results = Arc::new(results);
    let done = Arc::new(AtomicUsize::new(0));
    let wq = Arc::new(WaitQueue::new());
    let mut failure = None;
    for i in 0..n {
        let page = mm_lock()
            .as_mut()
            .and_then(|m| m.alloc_pages(0, AllocFlags::WORKLOAD).ok());
        let space = new_address_space();
        let (Some(page), Ok(space)) = (page, space) else {
            if let Some(p) = page {
                super::mem::free_table_page(p.addr().0);
            }
            failure = Some(SpinFailure::NoMemory { task: i });
            break;
        };
        let pa = page.addr().0;
        if let Err(e) = space.map_page(SPIN_VA, pa, true) {
            failure = Some(SpinFailure::Map(e));
            super::mem::free_table_page(pa);
            break;
        }
        let (res, done2, wq2) = (results.clone(), done.clone(), wq.clone());
        let body = move || {
            let r = &res[i];
            let counter = SPIN_VA as *mut u64;
            let mut iters = 0u64;
            let mut cpus = 0u64;
            while timer::counter() < deadline {
                iters += 1;
                // SAFETY: SPIN_VA is mapped (writable) in this task's own address space,
                // which is this CPU's TTBR0 space while the task runs.
                unsafe { counter.write_volatile(iters) };
                cpus |= 1 << cpu::index();
            }
            r.iterations.store(iters, Ordering::Relaxed);
            r.cpus.store(cpus, Ordering::Relaxed);
            r.last_cpu.store(cpu::index(), Ordering::Relaxed);
            done2.fetch_add(1, Ordering::Release);
            wq2.wake_all();
        };
        match Builder::new("spin")
            .workload()
            .address_space(space.clone())
            .spawn(body)
        {
            Ok(_) => spaces.push((space, pa)),
            Err(e) => {
                failure = Some(SpinFailure::Spawn(e));
                let _ = space.unmap_page(SPIN_VA);
                super::mem::free_table_page(pa);
                break;
            }
        }
    }
    let started = spaces.len();
    wq.wait_until(|| done.load(Ordering::Acquire) == started);
    for (i, (space, pa)) in spaces.into_iter().enumerate() {
        let r = &results[i];
        let iters = r.iterations.load(Ordering::Relaxed);
        // SAFETY: the page is ours (allocated above) and in the linear map; its task is done.
        let seen = unsafe { (layout::phys_to_virt(pa) as *const u64).read_volatile() };
        tasks.push(SpinTask {
            cpu: r.last_cpu.load(Ordering::Relaxed),
            cpus: r.cpus.load(Ordering::Relaxed),
            iterations: iters,
            asid: space.asid(),
            aspace_ok: seen == iters,
        });
        let _ = space.unmap_page(SPIN_VA);
        super::mem::free_table_page(pa);
    }
    SpinReport { failure, tasks }
}
