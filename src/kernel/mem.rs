//! Kernel glue of the memory model: the one `Mm` behind its lock, the `MemMapStore` over
//! the linear map, page-table pages for the MMU code and for task address spaces, the
//! floor (`unplug_floor_mib`), and what the `mem` / `sections` / `check` / `memtest`
//! commands need: snapshots taken under the lock (the shell prints them after releasing
//! it) and the memtests themselves (`memtest <MiB>`: any movable memory; `memtest sample`:
//! one page in every online Movable section).
//!
//! Classes of memory ([`hotmem::mm::reserve`]): the kernel's own tables are kernel memory;
//! the table pages of task address spaces (hog, spin) are workload memory, so a workload
//! cannot grow its page tables into the kernel reserve or the floor; `memtest` is a
//! transient workload (it may use the floor, never the reserve).
//!
//! Locks and their order: `MM` guards the whole memory model (section table, mem_maps,
//! free lists). The heap's lock (`super::heap`) is never held together with it, and nothing
//! allocates from the heap while `MM` is held: the heap counts any attempt (`check` fails
//! then). The page-table lock (in `hotmem_arch::mmu`) may take `MM` to get table pages
//! (order: page table -> MM).

use alloc::vec::Vec;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use hotmem::dt::BootInfo;
use hotmem::mm::{
    AllocFlags, CheckError, MemMap, MemMapItem, MemMapStore, MemRegion, MetaPages, Mm, NodeId, Pfn,
    PfnRange, PhysAddr, Pressure, Reservation, SectionInfo, ZoneStats, ZoneType, MAX_ORDER,
    MEM_MAP_BYTES_PER_PAGE, SECTION_SIZE, SUBSECTIONS_PER_SECTION, SUBSECTION_SIZE,
};
use hotmem_arch::cpu::{IrqSpinGuard, IrqSpinLock};
use hotmem_arch::layout::{self, PAGE_SIZE};
use hotmem_arch::mmu;

/// The memory model's store: mem_maps and section chunks live in RAM reached through the
/// linear map.
pub struct KernelStore;

impl MemMapStore for KernelStore {
    fn map<T: MemMapItem>(&mut self, meta: MetaPages) -> MemMap<T> {
        // SAFETY: the model's RAM is in the linear map (boot RAM before `Mm::boot`, plugged
        // RAM before it is added, so a unit's own descriptors too), and `release` (the
        // default) drops the slice.
        unsafe { linear_map(meta, || T::EMPTY) }
    }

    fn map_filled<T: MemMapItem + Copy>(&mut self, meta: MetaPages, value: T) -> MemMap<T> {
        // SAFETY: as for `map`.
        unsafe { linear_map(meta, || value) }
    }
}

/// The pages of `meta`, reached through the linear map, as a mapping whose every element is
/// written with `fill()` before the slice is formed.
///
/// # Safety
/// 1. The pages of `meta` are RAM the linear map covers (read-write, normal memory), for as
///    long as the mapping lives. That nothing else uses them is what the handle means: only
///    the model makes one, once per metadata allocation, and frees the pages only with the
///    handle back.
/// 2. The slice is not used once the model gives the pages up: metadata from an allocator
///    is freed only after its mapping came back through `release`; a unit's own
///    descriptors (`mm::memmap`: the model keeps the slice apart from the handle, which the
///    unit's address implies) are released before the unit is removed, and plugged memory
///    leaves the linear map only after it was removed.
unsafe fn linear_map<T: MemMapItem>(meta: MetaPages, mut fill: impl FnMut() -> T) -> MemMap<T> {
    let va = layout::phys_to_virt(meta.base().0) as *mut T;
    let len = meta.capacity::<T>();
    // SAFETY: by point 1 `[va, va + meta.size_bytes())` is mapped RAM that only this mapping
    // reaches; it is page aligned (so aligned for `T`) and holds `len` elements. Every element
    // is written with a valid `T` before the slice is formed; by point 2 the slice ends with
    // the mapping.
    let items = unsafe {
        for i in 0..len {
            va.add(i).write(fill());
        }
        core::slice::from_raw_parts_mut(va, len)
    };
    MemMap::new(meta, items)
}

pub type KernelMm = Mm<KernelStore>;

/// The memory model. `None` until [`init`]. Take it with [`mm_lock`].
static MM: IrqSpinLock<Option<KernelMm>> =
    IrqSpinLock::new(None).with_class(hotmem_arch::lock_class!("mm"));
/// CPU index + 1 of the holder of `MM`, 0 when free: lets the heap refuse (instead of
/// deadlocking) an allocation made while this CPU holds `MM`.
static MM_OWNER: AtomicUsize = AtomicUsize::new(0);

/// Guard of the memory model; see the module doc for the lock order.
pub struct MmGuard(IrqSpinGuard<'static, Option<KernelMm>>);

impl Deref for MmGuard {
    type Target = Option<KernelMm>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}
impl DerefMut for MmGuard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
impl Drop for MmGuard {
    fn drop(&mut self) {
        MM_OWNER.store(0, Ordering::Relaxed);
    }
}

/// Locks the memory model. Do not allocate from the heap while holding it: the heap may
/// need pages from the model (such an allocation fails instead of deadlocking).
pub fn mm_lock() -> MmGuard {
    let g = MM.lock();
    MM_OWNER.store(hotmem_arch::cpu::index() + 1, Ordering::Relaxed);
    MmGuard(g)
}

/// Does this CPU hold `MM`? (The heap then serves only from pages it already has.)
pub(super) fn mm_held_here() -> bool {
    MM_OWNER.load(Ordering::Relaxed) == hotmem_arch::cpu::index() + 1
}

/// Boots the memory model from the device tree's memory minus reservations, the kernel
/// image and the DTB, then gives the MMU code a page-table allocator.
pub fn init(info: &BootInfo, pa_bits: u32) {
    let mut regions: Vec<MemRegion> = Vec::new();
    for r in &info.memory {
        if r.range.end() > 1 << pa_bits {
            continue; // Refused (and reported) when the linear map was built.
        }
        regions.push(MemRegion {
            base: PhysAddr(r.range.base),
            size_bytes: r.range.size,
            node: NodeId::new(r.node).unwrap_or_else(|| {
                log::warn!("memory: node id {} out of range; using node 0", r.node);
                NodeId::ZERO
            }),
        });
    }
    let mut reserved: Vec<Reservation> = info
        .reserved
        .iter()
        .map(|r| Reservation {
            base: PhysAddr(r.range.base),
            size_bytes: r.range.size,
        })
        .collect();
    let image = mmu::image_phys_range();
    reserved.push(Reservation {
        base: PhysAddr(image.base),
        size_bytes: image.size,
    });
    reserved.push(Reservation {
        base: PhysAddr(info.dtb.base),
        size_bytes: info.dtb.size,
    });

    let t0 = hotmem_arch::timer::now_ns();
    match Mm::boot(&regions, &reserved, pa_bits, KernelStore) {
        Ok(mm) => {
            let t = mm.total_stats();
            let ms = (hotmem_arch::timer::now_ns() - t0) / 1000;
            log::info!(
                "mm: {} MiB present, {} MiB managed, mem_map {} bytes/page, init {} us",
                t.present_pages >> 8,
                t.managed_pages >> 8,
                MEM_MAP_BYTES_PER_PAGE,
                ms
            );
            let mut mm = mm;
            mm.set_floor_bytes(FLOOR_BYTES.load(Ordering::Relaxed));
            *mm_lock() = Some(mm);
            MM_READY.store(true, Ordering::Release);
            // SAFETY: `alloc_table_page` returns zeroed, page-aligned pages the model just
            // allocated, unmovable, so nothing else uses them until `free_table_page` gives
            // them back (which mmu does only for its own unlinked, flushed tables). The
            // linear map covers all boot RAM already, and plugged RAM is mapped before the
            // model can hand it out.
            unsafe { mmu::set_table_allocator(alloc_table_page, free_table_page) };
        }
        Err(e) => log::error!("mm: cannot build the memory model: {e}"),
    }
}

/// The model exists: the heap takes pages from it instead of the boot arena.
pub(super) static MM_READY: AtomicBool = AtomicBool::new(false);

/// The floor (bootarg `unplug_floor_mib=`), kept here until the model exists.
static FLOOR_BYTES: AtomicU64 = AtomicU64::new(64 << 20);

/// Sets the floor: free Normal memory that workloads and migration leave on top of the
/// kernel reserve, and that unplug keeps. Called by the boot options, before or after
/// [`init`].
pub fn set_floor_bytes(bytes: u64) {
    FLOOR_BYTES.store(bytes, Ordering::Relaxed);
    if let Some(mm) = mm_lock().as_mut() {
        mm.set_floor_bytes(bytes);
    }
}

/// A new zeroed page of `flags` memory for page tables.
fn alloc_zeroed_page(flags: AllocFlags) -> Option<u64> {
    let pfn = mm_lock().as_mut()?.alloc_pages(0, flags).ok()?;
    let pa = pfn.addr().0;
    // SAFETY: the page was just allocated to us and RAM is in the linear map.
    unsafe { core::ptr::write_bytes(layout::phys_to_virt(pa) as *mut u8, 0, PAGE_SIZE as usize) };
    Some(pa)
}

/// Physical address of a new zeroed page for the kernel's own page tables (kernel memory,
/// Normal).
pub fn alloc_table_page() -> Option<u64> {
    alloc_zeroed_page(AllocFlags::UNMOVABLE)
}

/// Physical address of a new zeroed page for a task address space's tables (workload
/// memory: Normal above the reserve and the floor). Freed with [`free_table_page`].
pub fn alloc_workload_table_page() -> Option<u64> {
    alloc_zeroed_page(AllocFlags::WORKLOAD)
}

/// Gives back a page from [`alloc_table_page`].
pub fn free_table_page(pa: u64) {
    if let Some(mm) = mm_lock().as_mut() {
        let _ = mm.free_pages(Pfn(pa / PAGE_SIZE), 0);
    }
}

// ---------------------------------------------------------------------------------------
// Snapshots and memtest for the shell (`super::shell` prints them)

/// Runs `f` on the model; `None` when there is no model.
fn with_mm<R>(f: impl FnOnce(&mut KernelMm) -> R) -> Option<R> {
    mm_lock().as_mut().map(f)
}

/// The kernel reserve and the floor, in bytes, as `mem` prints them.
#[derive(Clone, Copy)]
pub struct Limits {
    pub reserve_bytes: u64,
    pub floor_bytes: u64,
}

/// Every node's zones, the total and the limits, as `mem` prints them (`None`: no model).
/// Collected under the lock, printed after (printing is slow and must not hold MM).
pub fn zone_stats() -> Option<(arrayvec::ArrayVec<ZoneStats, 64>, ZoneStats, Limits)> {
    with_mm(|mm| {
        (
            mm.stats().collect::<arrayvec::ArrayVec<ZoneStats, 64>>(),
            mm.total_stats(),
            Limits {
                reserve_bytes: mm.reserve_bytes(),
                floor_bytes: mm.floor_bytes(),
            },
        )
    })
}

/// The memory state that explains a failed allocation (`None`: no model, or this CPU
/// holds MM already and cannot look).
pub(super) fn pressure() -> Option<Pressure> {
    if mm_held_here() {
        return None;
    }
    with_mm(|mm| mm.pressure())
}

/// The next (at most 32) present sections numbered `from` or above, in order (`None`: no
/// model). In batches: no heap allocation while MM is held.
pub fn sections_from(from: u64) -> Option<arrayvec::ArrayVec<SectionInfo, 32>> {
    with_mm(|mm| {
        mm.sections()
            .filter(|s| s.nr.0 >= from)
            .take(32)
            .collect::<arrayvec::ArrayVec<SectionInfo, 32>>()
    })
}

/// Runs the model's invariant checker (`None`: no model). It allocates nothing (its
/// message is a fixed-size string), so it runs under MM.
pub fn check() -> Option<Result<(), CheckError>> {
    let mut g = mm_lock();
    // One pass over every descriptor in one hold: recorded as `mm_check`, apart from the
    // model's run-time holds (`locks` shows both).
    g.0.count_in(hotmem_arch::lock_class!("mm_check"));
    g.as_mut().map(|mm| mm.check())
}

/// Why `memtest` failed.
pub enum MemtestError {
    /// There is no memory model.
    NoModel,
    /// Only `got_mib` of the `mib` asked for could be allocated.
    OutOfMemory {
        /// MiB allocated before the model ran out.
        got_mib: u64,
        /// MiB asked for.
        mib: u64,
    },
    /// A word read back differs from the pattern written.
    Mismatch {
        /// Physical address of the word.
        pa: u64,
        /// The pattern written.
        expected: u64,
        /// What was read.
        found: u64,
    },
}

/// Pattern word for physical address `pa`.
fn pattern(pa: u64) -> u64 {
    pa.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a_a5a5_0f0f_f0f0
}

/// Allocates `mib` of movable memory (largest blocks first), fills every word with a
/// pattern of its address, verifies it, and frees it again. A transient workload: it may
/// use the floor but never the kernel reserve, and it reports a shortfall as
/// [`MemtestError::OutOfMemory`]. Its list of blocks grows fallibly (a list it cannot grow
/// is a shortfall too); freeing allocates nothing.
pub fn memtest(mib: u64) -> Result<(), MemtestError> {
    let want_pages = mib * 256;
    let mut blocks: Vec<(Pfn, u32)> = Vec::new();
    let mut got = 0u64;
    let mut order = MAX_ORDER;
    while got < want_pages {
        while order > 0 && (1u64 << order) > want_pages - got {
            order -= 1;
        }
        if blocks.len() == blocks.capacity() && blocks.try_reserve(blocks.len().max(64)).is_err() {
            break;
        }
        let r = mm_lock()
            .as_mut()
            .map(|m| m.alloc_pages(order, AllocFlags::MOVABLE.transient()));
        match r {
            Some(Ok(pfn)) => {
                blocks.push((pfn, order));
                got += 1 << order;
            }
            Some(Err(_)) if order > 0 => order -= 1,
            Some(Err(_)) => break,
            None => return Err(MemtestError::NoModel),
        }
    }
    let mut failure = None;
    if got == want_pages {
        for &(pfn, order) in &blocks {
            fill(pfn, order);
        }
        failure = blocks.iter().find_map(|&(pfn, order)| verify(pfn, order));
    }
    let free = |blocks: &[(Pfn, u32)]| {
        let mut g = mm_lock();
        if let Some(mm) = g.as_mut() {
            for &(pfn, order) in blocks {
                let _ = mm.free_pages(pfn, order);
            }
        }
    };
    free(&blocks);
    if got < want_pages {
        Err(MemtestError::OutOfMemory {
            got_mib: got / 256,
            mib,
        })
    } else if let Some((pa, expected, found)) = failure {
        Err(MemtestError::Mismatch {
            pa,
            expected,
            found,
        })
    } else {
        Ok(())
    }
}

/// What `memtest sample` found.
pub struct SampleReport {
    /// Online Movable sections in which one page was written and read back.
    pub sections: u64,
    /// Online Movable sections with no free page to take (nothing tested there).
    pub busy: u64,
}

/// Tests one page in every present online Movable section: takes a free page inside the
/// section (searching its pageblocks from one that varies with the section number, so
/// repeated runs over many sections do not all hit a unit's first page), fills it with
/// the address pattern, verifies and frees it. A transient workload like [`memtest`];
/// one MM hold per pageblock searched, none while the page is written or read.
pub fn memtest_sample() -> Result<SampleReport, MemtestError> {
    let mut report = SampleReport {
        sections: 0,
        busy: 0,
    };
    let mut from = 0;
    loop {
        let batch = sections_from(from).ok_or(MemtestError::NoModel)?;
        let Some(last) = batch.last() else {
            return Ok(report);
        };
        from = last.nr.0 + 1;
        for s in batch
            .iter()
            .filter(|s| s.zone == Some(ZoneType::Movable) && s.subsections_online > 0)
        {
            match sample_section(s.start)? {
                Some(pfn) => {
                    fill(pfn, 0);
                    let failure = verify(pfn, 0);
                    if let Some(mm) = mm_lock().as_mut() {
                        let _ = mm.free_pages(pfn, 0);
                    }
                    if let Some((pa, expected, found)) = failure {
                        return Err(MemtestError::Mismatch {
                            pa,
                            expected,
                            found,
                        });
                    }
                    report.sections += 1;
                }
                None => report.busy += 1,
            }
        }
    }
}

/// One free page of the section at `start`, allocated (`None`: the section has none).
fn sample_section(start: PhysAddr) -> Result<Option<Pfn>, MemtestError> {
    let nr = start.0 / SECTION_SIZE;
    for i in 0..SUBSECTIONS_PER_SECTION {
        let pb = start.0 + (nr + i) % SUBSECTIONS_PER_SECTION * SUBSECTION_SIZE;
        let range = PfnRange::new(Pfn(pb / PAGE_SIZE), Pfn((pb + SUBSECTION_SIZE) / PAGE_SIZE));
        match with_mm(|mm| mm.alloc_page_in(range, AllocFlags::MOVABLE.transient())) {
            None => return Err(MemtestError::NoModel),
            Some(Ok(pfn)) => return Ok(Some(pfn)),
            Some(Err(_)) => {}
        }
    }
    Ok(None)
}

fn block_words(pfn: Pfn, order: u32) -> &'static mut [u64] {
    let va = layout::phys_to_virt(pfn.addr().0) as *mut u64;
    let words = ((PAGE_SIZE << order) / 8) as usize;
    // SAFETY: the block was allocated to memtest (nobody else uses it until it is freed)
    // and all RAM the model manages is in the linear map.
    unsafe { core::slice::from_raw_parts_mut(va, words) }
}

fn fill(pfn: Pfn, order: u32) {
    let base = pfn.addr().0;
    for (i, w) in block_words(pfn, order).iter_mut().enumerate() {
        *w = pattern(base + 8 * i as u64);
    }
}

fn verify(pfn: Pfn, order: u32) -> Option<(u64, u64, u64)> {
    let base = pfn.addr().0;
    block_words(pfn, order)
        .iter()
        .enumerate()
        .find_map(|(i, &w)| {
            let pa = base + 8 * i as u64;
            (w != pattern(pa)).then_some((pa, pattern(pa), w))
        })
}
