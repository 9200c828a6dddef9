//! The `hog` workload and `pin`: movable memory that lives through unplug.
//!
//! `hog <MiB>` starts max(1, CPUs − 1) tasks, each with its own address space, that together
//! map MiB of movable memory (split evenly) at [`HOG_VA_BASE`], fill it with a pattern derived
//! from the virtual address and a generation, and loop: verify every word, bump the
//! generation, rewrite. A mismatch is counted and logged with its address. The pages are
//! reached only through the tasks' page tables, so unplug can migrate them under the tasks'
//! feet; a task touching a page in flight sleeps in the fault handler (`migrate::fault_hook`).
//!
//! `pin <MiB>` takes an extra reference on that many hog pages, the highest physical
//! addresses first (like in-flight DMA): migration refuses them until `unpin`.
//!
//! Each command's function returns what it did ([`Started`], [`Status`], [`Pinned`], ...);
//! the shell prints it, and after `hog stop` and `unpin` lets a stalled unplug try again.
//!
//! Memory: the hog is a workload (`hotmem::mm::reserve`): its pages, its tasks' stacks and
//! their page tables never take the kernel reserve or the floor, so when memory runs short
//! (a shrink moved its data into Normal, or it asked for more than there is) a task stops
//! mapping, logs `mapped N of M pages: out of memory`, and verifies what it has. What grows
//! with the hog is allocated fallibly: the task list at start, each task's unmap buffer
//! (before it maps anything, so `hog stop` allocates nothing), and the pin list; a pin
//! that finds no memory pins nothing and says so.
//!
//! State: `HOG` (the running hog: per task its address space, page count and counters) and
//! `PINS` (pinned pfns), each behind its own lock, taken before `RMAP` and `mm_lock()`.
//! Mapping and unmapping a hog page happen under `RMAP` (see `migrate`).

use super::mem::mm_lock;
use super::migrate::{self, RMAP};
use super::task::{self, Builder, SpawnError};
use alloc::collections::BinaryHeap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cmp::Reverse;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use hotmem::mm::migrate::Pte;
use hotmem::mm::rmap::AsId;
use hotmem::mm::{AllocFlags, Pfn};
use hotmem_arch::cpu::IrqSpinLock;
use hotmem_arch::layout::PAGE_SIZE;
use hotmem_arch::uspace::{AddressSpace, AsError};

/// Where each hog task maps its memory (lower half, in its own address space).
pub const HOG_VA_BASE: u64 = 0x0000_1000_0000_0000;
/// Mismatches logged per task (all are counted).
const LOGGED_ERRORS: u64 = 8;

/// One hog task's shared state.
struct Worker {
    aspace: Arc<AddressSpace>,
    as_id: AsId,
    /// Pages this task should map.
    want: u64,
    /// Pages mapped so far.
    mapped: AtomicU64,
    rounds: AtomicU64,
    errors: AtomicU64,
    finished: AtomicBool,
}

struct Hog {
    workers: Vec<Arc<Worker>>,
    stop: Arc<AtomicBool>,
}

static HOG: IrqSpinLock<Option<Hog>> =
    IrqSpinLock::new(None).with_class(hotmem_arch::lock_class!("hog"));
static PINS: IrqSpinLock<Vec<Pfn>> =
    IrqSpinLock::new(Vec::new()).with_class(hotmem_arch::lock_class!("pins"));

/// Pattern word at `va` for generation `gen`.
pub fn pattern(va: u64, gen: u64) -> u64 {
    (va ^ gen.wrapping_mul(0x9e37_79b9_7f4a_7c15)).rotate_left((gen % 61) as u32)
        ^ 0xa5a5_5a5a_c3c3_3c3c
}

/// `hog start` refused: a hog runs already.
pub struct AlreadyRunning;

/// Why `hog start` started fewer tasks than it planned (it stops at the first failure).
pub enum StartFailure {
    /// No memory for the list of tasks.
    NoMemory,
    /// No address space for the next task.
    AddressSpace(AsError),
    /// The next task could not be spawned.
    Spawn(SpawnError),
}

/// What `hog start` did.
pub struct Started {
    /// Tasks running.
    pub tasks: usize,
    /// Pages they map together (split evenly among the planned tasks).
    pub pages: u64,
    /// Why fewer tasks started than planned, if so.
    pub failure: Option<StartFailure>,
}

/// What `hog status` shows (all zero when no hog runs).
#[derive(Default)]
pub struct Status {
    /// Tasks of the running hog.
    pub tasks: usize,
    /// Pages mapped so far.
    pub pages: u64,
    /// Verify-and-rewrite rounds every task has completed (the slowest task's count).
    pub rounds: u64,
    /// Mismatches found, all tasks together.
    pub errors: u64,
}

/// Why `pin` pinned nothing.
pub enum PinFailure {
    /// No hog runs.
    NotRunning,
    /// No memory for the list of pages to pin.
    NoMemory,
}

/// What `pin` did.
pub struct Pinned {
    /// Pages pinned.
    pub pages: usize,
    /// Physical address of the highest pinned page (0 when none).
    pub highest: u64,
}

/// Starts the hog: `tasks` tasks (default max(1, CPUs - 1)) that map `mib` MiB together.
pub fn start(mib: u64, tasks: Option<u64>) -> Result<Started, AlreadyRunning> {
    if HOG.lock().is_some() {
        return Err(AlreadyRunning);
    }
    let cpus = super::cpus::NR_CPUS.load(Ordering::Relaxed).max(1);
    let n = tasks.unwrap_or((cpus - 1).max(1) as u64);
    let total = mib * (1 << 20) / PAGE_SIZE;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    if workers.try_reserve_exact(n as usize).is_err() {
        return Ok(Started {
            tasks: 0,
            pages: total,
            failure: Some(StartFailure::NoMemory),
        });
    }
    let mut failure = None;
    for i in 0..n {
        let want = total / n + u64::from(i < total % n);
        let aspace = match task::new_address_space() {
            Ok(a) => a,
            Err(e) => {
                failure = Some(StartFailure::AddressSpace(e));
                break;
            }
        };
        let as_id = migrate::register_space(aspace.clone());
        let w = Arc::new(Worker {
            aspace: aspace.clone(),
            as_id,
            want,
            mapped: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        });
        let (wc, sc) = (w.clone(), stop.clone());
        match Builder::new("hog")
            .workload()
            .address_space(aspace)
            .spawn(move || run(&wc, &sc))
        {
            Ok(_) => workers.push(w),
            Err(e) => {
                migrate::unregister_space(as_id);
                failure = Some(StartFailure::Spawn(e));
                break;
            }
        }
    }
    let started = workers.len();
    *HOG.lock() = Some(Hog { workers, stop });
    Ok(Started {
        tasks: started,
        pages: total,
        failure,
    })
}

/// The running hog's counters.
pub fn status() -> Status {
    let g = HOG.lock();
    let Some(h) = g.as_ref() else {
        return Status::default();
    };
    let pages: u64 = h
        .workers
        .iter()
        .map(|w| w.mapped.load(Ordering::Relaxed))
        .sum();
    let rounds = h
        .workers
        .iter()
        .map(|w| w.rounds.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0);
    let errors: u64 = h
        .workers
        .iter()
        .map(|w| w.errors.load(Ordering::Relaxed))
        .sum();
    let tasks = h.workers.len();
    drop(g);
    Status {
        tasks,
        pages,
        rounds,
        errors,
    }
}

/// Stops the hog, waits for its tasks to unmap and free everything, and returns the
/// mismatches they counted (`None`: no hog runs).
pub fn stop() -> Option<u64> {
    let h = HOG.lock().take()?;
    h.stop.store(true, Ordering::Release);
    while !h.workers.iter().all(|w| w.finished.load(Ordering::Acquire)) {
        task::sleep_ms(10);
    }
    let errors: u64 = h
        .workers
        .iter()
        .map(|w| w.errors.load(Ordering::Relaxed))
        .sum();
    for w in &h.workers {
        migrate::unregister_space(w.as_id);
    }
    Some(errors)
}

/// Body of one hog task.
fn run(w: &Worker, stop: &AtomicBool) {
    // The buffer the unmapping needs, before anything is mapped: teardown never allocates.
    let mut freed: Vec<Pfn> = Vec::new();
    let want = if freed.try_reserve_exact(UNMAP_BATCH as usize).is_ok() {
        w.want
    } else {
        log::warn!("hog: mapped 0 of {} pages: out of memory", w.want);
        0
    };
    // Map.
    for i in 0..want {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let va = HOG_VA_BASE + i * PAGE_SIZE;
        match map_one(w, va) {
            Ok(()) => w.mapped.fetch_add(1, Ordering::Relaxed),
            Err(why) => {
                log::warn!("hog: mapped {} of {} pages: {why}", i, w.want);
                break;
            }
        };
    }
    let pages = w.mapped.load(Ordering::Relaxed);
    let mut gen = 1;
    write_all(pages, gen);
    while !stop.load(Ordering::Relaxed) {
        if !verify_all(w, pages, gen, stop) {
            break;
        }
        w.rounds.fetch_add(1, Ordering::Relaxed);
        gen += 1;
        write_all(pages, gen);
    }
    unmap_all(w, pages, &mut freed);
    w.finished.store(true, Ordering::Release);
}

fn map_one(w: &Worker, va: u64) -> Result<(), &'static str> {
    let flags = AllocFlags::MOVABLE;
    let pfn = mm_lock()
        .as_mut()
        .ok_or("no memory model")?
        .alloc_pages(0, flags)
        .map_err(|_| "out of memory")?;
    let mut rmap = RMAP.lock();
    let ok = rmap.add(pfn, w.as_id, va).is_ok()
        && mm_lock().as_mut().is_some_and(|m| m.get_page(pfn).is_ok())
        && w.aspace.map_page(va, pfn.0 * PAGE_SIZE, true).is_ok();
    if !ok {
        let _ = rmap.remove(pfn, w.as_id, va);
        drop(rmap);
        if let Some(m) = mm_lock().as_mut() {
            let _ = m.free_pages(pfn, 0);
        }
        return Err("cannot map");
    }
    Ok(())
}

/// Pages unmapped per TLB flush when the hog ends.
const UNMAP_BATCH: u64 = 4096;

/// Unmaps and frees the task's `pages`, in batches of [`UNMAP_BATCH`] collected in `freed`
/// (which has room for a batch: nothing is allocated here).
fn unmap_all(w: &Worker, pages: u64, freed: &mut Vec<Pfn>) {
    let mut first = 0;
    while first < pages {
        let end = (first + UNMAP_BATCH).min(pages);
        freed.clear();
        for i in first..end {
            let va = HOG_VA_BASE + i * PAGE_SIZE;
            // Waits out a migration of the page; once its reverse-map entry is gone the
            // engine no longer sees the mapping.
            if let Some(pfn) = migrate::unmap_movable(&w.aspace, w.as_id, va) {
                freed.push(pfn);
            }
        }
        // One flush for the batch, before any of its pages can be reused.
        w.aspace.flush_all();
        if let Some(m) = mm_lock().as_mut() {
            for &pfn in freed.iter() {
                // The mapping's reference, then the allocation's (a pin may hold a third).
                let _ = m.put_page(pfn);
                let _ = m.put_page(pfn);
            }
        }
        first = end;
    }
}

fn words(pages: u64) -> impl Iterator<Item = u64> {
    (0..pages * PAGE_SIZE / 8).map(|i| HOG_VA_BASE + i * 8)
}

fn write_all(pages: u64, gen: u64) {
    for va in words(pages) {
        // SAFETY: `va` lies in pages this task mapped writable in its own address space,
        // which stays loaded while it runs; a page under migration faults and the fault
        // handler sleeps until it is mapped again.
        unsafe { core::ptr::write_volatile(va as *mut u64, pattern(va, gen)) };
    }
}

/// Verifies every word; false if asked to stop half-way.
fn verify_all(w: &Worker, pages: u64, gen: u64, stop: &AtomicBool) -> bool {
    for (n, va) in words(pages).enumerate() {
        if n % 4096 == 0 && stop.load(Ordering::Relaxed) {
            return false;
        }
        // SAFETY: as in `write_all`.
        let got = unsafe { core::ptr::read_volatile(va as *const u64) };
        let want = pattern(va, gen);
        if got != want {
            let e = w.errors.fetch_add(1, Ordering::Relaxed);
            if e < LOGGED_ERRORS {
                log::error!("hog: mismatch at va 0x{va:x}: expected 0x{want:x} got 0x{got:x}");
            }
        }
    }
    true
}

/// Pins `mib` of hog memory, highest physical addresses first. The list of pages is
/// allocated (fallibly) before any lock is taken and holds only the pages to pin: the
/// highest ones are kept in a bounded min-heap while the hog's mappings are read.
pub fn pin(mib: u64) -> Result<Pinned, PinFailure> {
    let want = (mib * (1 << 20) / PAGE_SIZE) as usize;
    let mut workers: Vec<Arc<Worker>> = Vec::new();
    {
        let g = HOG.lock();
        let h = g.as_ref().ok_or(PinFailure::NotRunning)?;
        workers
            .try_reserve_exact(h.workers.len())
            .map_err(|_| PinFailure::NoMemory)?;
        // Within capacity: no allocation under HOG.
        workers.extend(h.workers.iter().cloned());
    }
    let mapped: u64 = workers
        .iter()
        .map(|w| w.mapped.load(Ordering::Relaxed))
        .sum();
    let keep = want.min(mapped as usize);
    let mut highest: BinaryHeap<Reverse<Pfn>> = BinaryHeap::new();
    highest
        .try_reserve_exact(keep + 1)
        .map_err(|_| PinFailure::NoMemory)?;
    PINS.lock()
        .try_reserve(keep)
        .map_err(|_| PinFailure::NoMemory)?;
    // Under RMAP the present entries read here are stable (a page under migration has a
    // migration entry instead, and is skipped).
    let rmap = RMAP.lock();
    if keep > 0 {
        for w in &workers {
            for i in 0..w.mapped.load(Ordering::Relaxed) {
                if let Pte::Present { pfn, .. } =
                    migrate::decode(w.aspace.entry(HOG_VA_BASE + i * PAGE_SIZE))
                {
                    // Within capacity (keep + 1): no allocation under RMAP.
                    highest.push(Reverse(pfn));
                    if highest.len() > keep {
                        highest.pop();
                    }
                }
            }
        }
    }
    let mut pfns = highest.into_vec();
    pfns.sort_unstable_by(|Reverse(a), Reverse(b)| b.cmp(a));
    // One hold of the model's lock for all the pins; nothing is allocated under it.
    if let Some(m) = mm_lock().as_mut() {
        pfns.retain(|&Reverse(pfn)| m.get_page(pfn).is_ok());
    }
    drop(rmap);
    let n = pfns.len();
    let top = pfns.first().map_or(0, |Reverse(p)| p.0 * PAGE_SIZE);
    // Room was reserved above (the shell runs one command at a time, so nobody pinned in
    // between).
    PINS.lock().extend(pfns.into_iter().map(|Reverse(p)| p));
    Ok(Pinned {
        pages: n,
        highest: top,
    })
}

/// Releases every pin; returns how many pages were pinned.
pub fn unpin() -> usize {
    let pins = core::mem::take(&mut *PINS.lock());
    let n = pins.len();
    if let Some(m) = mm_lock().as_mut() {
        for pfn in pins {
            let _ = m.put_page(pfn);
        }
    }
    n
}
