//! Kernel glue of the memory model: the one `Mm` behind its lock, the `MemMapStore` over
//! the linear map, the `#[global_allocator]` heap, page-table pages for the MMU code, and the
//! `mem` / `sections` / `check` / `memtest` commands.
//!
//! Locks and their order: `MM` guards the whole memory model (section table, mem_maps,
//! free lists). `HEAP` guards the slab heap. They are never held together: when the slab
//! heap needs pages it gives up with a note of the order it wanted, the allocator drops
//! `HEAP`, takes pages from `MM`, and retries (see [`KernelHeap`]). Blocks the heap frees are
//! handed back to `MM` the same way, after `HEAP` is dropped. The page-table lock (in
//! `hotmem_arch::mmu`) may take `MM` to get table pages (order: page table -> MM).
//!
//! Before the model exists the heap draws from a static boot arena, which `Mm::boot` itself
//! uses for its few boot-time structures.

use super::BootInfo;
use crate::println;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use hotmem::mm::heap::{HeapBacking, SlabHeap};
use hotmem::mm::{
    AllocFlags, MemMap, MemMapItem, MemMapStore, MemRegion, MetaPages, Mm, NodeId, Pfn, PhysAddr,
    Reservation, SectionInfo, ZoneStats, ZoneType, MAX_ORDER, MEM_MAP_BYTES_PER_PAGE,
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
        // RAM before it is added), and `release` (the default) drops the slice.
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
/// 2. The slice is not used after the handle is taken out of the mapping
///    ([`MemMap::into_parts`]), because the model frees the pages then.
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
static MM: IrqSpinLock<Option<KernelMm>> = IrqSpinLock::new(None);
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

fn mm_held_here() -> bool {
    MM_OWNER.load(Ordering::Relaxed) == hotmem_arch::cpu::index() + 1
}

/// Boots the memory model from the device tree's memory minus reservations, the kernel
/// image and the DTB, then gives the MMU code a page-table allocator.
pub fn init(info: &BootInfo, pa_bits: u32) {
    let mut regions: Vec<MemRegion> = Vec::new();
    for r in &info.memory {
        if r.range.base + r.range.size > 1 << pa_bits {
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
    let (img_start, img_end) = mmu::image_phys_range();
    reserved.push(Reservation {
        base: PhysAddr(img_start),
        size_bytes: img_end - img_start,
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
            *mm_lock() = Some(mm);
            MM_READY.store(true, Ordering::Release);
            // SAFETY: `alloc_table_page` returns zeroed, page-aligned pages the model just
            // allocated, unmovable, so nothing else uses them; the kernel never frees its
            // tables. The linear map covers all boot RAM already, and plugged RAM is mapped
            // before the model can hand it out.
            unsafe { mmu::set_table_allocator(alloc_table_page) };
        }
        Err(e) => log::error!("mm: cannot build the memory model: {e}"),
    }
}

static MM_READY: AtomicBool = AtomicBool::new(false);

/// Physical address of a new zeroed page for page tables (unmovable, Normal): the kernel's
/// tables and every task address space's.
pub fn alloc_table_page() -> Option<u64> {
    let pfn = mm_lock()
        .as_mut()?
        .alloc_pages(0, AllocFlags::UNMOVABLE)
        .ok()?;
    let pa = pfn.addr().0;
    // SAFETY: the page was just allocated to us and RAM is in the linear map.
    unsafe { core::ptr::write_bytes(layout::phys_to_virt(pa) as *mut u8, 0, PAGE_SIZE as usize) };
    Some(pa)
}

/// Gives back a page from [`alloc_table_page`].
pub fn free_table_page(pa: u64) {
    if let Some(mm) = mm_lock().as_mut() {
        let _ = mm.free_pages(Pfn(pa / PAGE_SIZE), 0);
    }
}

// ---------------------------------------------------------------------------------------
// Heap

const BOOT_ARENA_SIZE: usize = 2 << 20;

#[repr(C, align(4096))]
struct Arena([u8; BOOT_ARENA_SIZE]);
static mut BOOT_ARENA: Arena = Arena([0; BOOT_ARENA_SIZE]);

/// Page blocks between the slab heap and the page allocator.
struct Backing {
    /// Blocks given to the heap and not yet taken (address, order).
    donated: arrayvec::ArrayVec<(usize, u32), 8>,
    /// Blocks the heap freed, to give back to `MM` once `HEAP` is released.
    freed: arrayvec::ArrayVec<(usize, u32), 8>,
    /// The order the heap last asked for and did not get.
    wanted: Option<u32>,
    /// Bump offset into the boot arena.
    arena_used: usize,
}

fn arena_base() -> usize {
    &raw const BOOT_ARENA as usize
}

fn in_arena(addr: usize) -> bool {
    (arena_base()..arena_base() + BOOT_ARENA_SIZE).contains(&addr)
}

impl HeapBacking for Backing {
    fn alloc_pages(&mut self, order: u32) -> Option<usize> {
        if let Some(i) = self.donated.iter().position(|&(_, o)| o == order) {
            return Some(self.donated.swap_remove(i).0);
        }
        if !MM_READY.load(Ordering::Acquire) {
            // Boot: bump-allocate naturally aligned blocks from the arena.
            let size = (PAGE_SIZE as usize) << order;
            let start = (arena_base() + self.arena_used).next_multiple_of(size);
            if start + size <= arena_base() + BOOT_ARENA_SIZE {
                self.arena_used = start + size - arena_base();
                return Some(start);
            }
            return None;
        }
        self.wanted = Some(order);
        None
    }

    fn free_pages(&mut self, addr: usize, order: u32) {
        if in_arena(addr) {
            // Boot-arena blocks are not part of the page allocator; keep them for reuse.
            let _ = self.donated.try_push((addr, order));
        } else if let Err(e) = self.freed.try_push((addr, order)) {
            let _ = self.donated.try_push(e.element());
        }
    }

    fn read_word(&self, addr: usize) -> usize {
        // SAFETY: the slab heap reads only word-aligned addresses inside blocks it holds,
        // which are mapped RAM (arena in the image, or linear-map pages from `MM`).
        unsafe { (addr as *const usize).read() }
    }

    fn write_word(&mut self, addr: usize, value: usize) {
        // SAFETY: as for `read_word`; the heap owns these blocks.
        unsafe { (addr as *mut usize).write(value) }
    }
}

struct HeapState {
    slab: SlabHeap,
    backing: Backing,
}

static HEAP: IrqSpinLock<HeapState> = IrqSpinLock::new(HeapState {
    slab: SlabHeap::new(),
    backing: Backing {
        donated: arrayvec::ArrayVec::new_const(),
        freed: arrayvec::ArrayVec::new_const(),
        wanted: None,
        arena_used: 0,
    },
});

/// The kernel heap: [`SlabHeap`] over pages from `MM` (see the module doc for locking).
pub struct KernelHeap;

#[global_allocator]
static GLOBAL: KernelHeap = KernelHeap;

fn give_back(freed: arrayvec::ArrayVec<(usize, u32), 8>) {
    if freed.is_empty() {
        return;
    }
    if mm_held_here() {
        // Freed while this CPU holds MM: keep the blocks in the heap for reuse.
        let mut h = HEAP.lock();
        for b in freed {
            let _ = h.backing.donated.try_push(b);
        }
        return;
    }
    let mut mm = mm_lock();
    if let Some(mm) = mm.as_mut() {
        for (va, order) in freed {
            if let Some(pa) = layout::linear_virt_to_phys(va as u64) {
                let _ = mm.free_pages(PhysAddr(pa).pfn_down(), order);
            }
        }
    }
}

// SAFETY: every path either returns null or a block of at least `layout.size()` bytes
// aligned to `layout.align()` that the slab heap handed out exactly once; `dealloc` returns
// blocks to the slab heap with the same layout.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        for _ in 0..4 {
            let (got, wanted, freed) = {
                let mut h = HEAP.lock();
                let HeapState { slab, backing } = &mut *h;
                let got = slab.alloc(backing, layout.size(), layout.align());
                (
                    got,
                    backing.wanted.take(),
                    core::mem::take(&mut backing.freed),
                )
            };
            give_back(freed);
            if let Some(a) = got {
                return a as *mut u8;
            }
            let Some(order) = wanted else {
                return core::ptr::null_mut();
            };
            if order > MAX_ORDER || mm_held_here() {
                return core::ptr::null_mut();
            }
            let pfn = match mm_lock()
                .as_mut()
                .map(|m| m.alloc_pages(order, AllocFlags::UNMOVABLE))
            {
                Some(Ok(pfn)) => pfn,
                _ => return core::ptr::null_mut(),
            };
            let va = layout::phys_to_virt(pfn.addr().0) as usize;
            let mut h = HEAP.lock();
            if h.backing.donated.try_push((va, order)).is_err() {
                drop(h);
                give_back([(va, order)].into_iter().collect());
            }
        }
        core::ptr::null_mut()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let freed = {
            let mut h = HEAP.lock();
            let HeapState { slab, backing } = &mut *h;
            slab.dealloc(backing, ptr as usize, layout.size(), layout.align());
            core::mem::take(&mut backing.freed)
        };
        give_back(freed);
    }
}

// ---------------------------------------------------------------------------------------
// Shell commands

fn kib(pages: u64) -> u64 {
    pages * (PAGE_SIZE / 1024)
}

fn zone_name(z: Option<ZoneType>) -> &'static str {
    match z {
        Some(ZoneType::Normal) => "Normal",
        Some(ZoneType::Movable) => "Movable",
        None => "all",
    }
}

fn print_zone(node: &dyn core::fmt::Display, z: &ZoneStats) {
    println!(
        "node={} zone={} present_kib={} managed_kib={} free_kib={}",
        node,
        zone_name(z.zone),
        kib(z.present_pages),
        kib(z.managed_pages),
        kib(z.free_pages)
    );
}

/// Runs `f` on the model, or prints why it cannot.
fn with_mm<R>(cmd: &str, f: impl FnOnce(&mut KernelMm) -> R) -> Option<R> {
    let mut g = mm_lock();
    match g.as_mut() {
        Some(mm) => Some(f(mm)),
        None => {
            drop(g);
            println!("{cmd}: the memory model is not initialised");
            None
        }
    }
}

pub fn cmd_mem() {
    // Collect under the lock, print after (printing is slow and must not hold MM).
    let Some((zones, total)) = with_mm("mem", |mm| {
        (
            mm.stats().collect::<arrayvec::ArrayVec<ZoneStats, 64>>(),
            mm.total_stats(),
        )
    }) else {
        return;
    };
    for z in &zones {
        print_zone(&z.node, z);
    }
    print_zone(&"all", &total);
}

pub fn cmd_sections() {
    // In batches: no heap allocation while MM is held.
    let mut next = 0u64;
    loop {
        let Some(batch) = with_mm("sections", |mm| {
            mm.sections()
                .filter(|s| s.nr.0 >= next)
                .take(32)
                .collect::<arrayvec::ArrayVec<SectionInfo, 32>>()
        }) else {
            return;
        };
        let Some(last) = batch.last() else { return };
        next = last.nr.0 + 1;
        print_sections(&batch);
    }
}

fn print_sections(secs: &[SectionInfo]) {
    for s in secs {
        let state = if s.boot { "boot" } else { "hotplug" };
        println!(
            "section={} start=0x{:x} end=0x{:x} node={} zone={} state={}-{} subsections={}/64 online={}/64 isolated={}/64",
            s.nr.0,
            s.start.0,
            s.end.0,
            s.node,
            match s.zone {
                Some(z) => zone_name(Some(z)),
                None => "none",
            },
            s.state,
            state,
            s.subsections_present,
            s.subsections_online,
            s.pageblocks_isolated
        );
    }
}

pub fn cmd_check() {
    // The checker builds its failure message on the heap while MM is held; on that rare
    // path the heap serves from pages it already holds.
    match with_mm("check", |mm| mm.check()) {
        Some(Ok(())) => println!("check: ok"),
        Some(Err(reason)) => println!("check: FAIL {reason}"),
        None => {}
    }
}

/// Pattern word for physical address `pa`.
fn pattern(pa: u64) -> u64 {
    pa.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a_a5a5_0f0f_f0f0
}

pub fn cmd_memtest(mib: u64) {
    let want_pages = mib * 256;
    let mut blocks: Vec<(Pfn, u32)> = Vec::new();
    let mut got = 0u64;
    let mut order = MAX_ORDER;
    while got < want_pages {
        while order > 0 && (1u64 << order) > want_pages - got {
            order -= 1;
        }
        let r = mm_lock()
            .as_mut()
            .map(|m| m.alloc_pages(order, AllocFlags::MOVABLE));
        match r {
            Some(Ok(pfn)) => {
                blocks.push((pfn, order));
                got += 1 << order;
            }
            Some(Err(_)) if order > 0 => order -= 1,
            Some(Err(_)) => break,
            None => {
                println!("memtest: FAIL the memory model is not initialised");
                return;
            }
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
        println!(
            "memtest: FAIL out of memory after {} of {} MiB",
            got / 256,
            mib
        );
    } else if let Some((pa, expected, found)) = failure {
        println!("memtest: FAIL addr=0x{pa:x} expected=0x{expected:x} got=0x{found:x}");
    } else {
        println!("memtest: ok mib={mib}");
    }
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
