//! The live kernel translation tables (TTBR1): the W^X image mapping and the linear map,
//! grown and shrunk at run time with broadcast TLB maintenance ([`crate::tlb`], sized by
//! what the unmap removed: one invalidation per 2 MiB block, or range invalidations).
//!
//! State (behind one IRQ-safe lock, `KERNEL_PT`): the root table (none until [`init`]) and
//! where new table pages come from. Until the page allocator is up, table pages come from a
//! static pool inside the image (`EARLY_POOL`); afterwards from a frame-allocator hook the
//! kernel installs with [`set_table_allocator`]. Both are `unsafe fn`: [`init`] switches the
//! CPU's tables and may run only once, and every mapping relies on the pages the hook
//! returns being fit to be tables (the hook's contract is [`TableMemory`]'s point 2).
//!
//! Table pages are reached through a virtual address chosen by where they live: pages inside
//! the kernel image (the early pool) through the image mapping, every other page through the
//! linear map. That rule makes the table walker usable before the linear map exists.
//!
//! TTBR1 is switched exactly once, from the boot tables (2 MiB RWX blocks) to the final tables,
//! by a trampoline that runs from the boot identity map so no instruction it executes is
//! translated through TTBR1 while the switch happens.

use crate::addr::{PhysRange, VirtAddr};
use crate::cpu::IrqSpinLock;
use crate::layout::{phys_to_virt, KIMAGE_VA, PAGE_SIZE, TEXT_OFFSET};
use crate::pgtable::{self, Attrs, Granule, MapError, TableMemory, TablePa, ENTRIES};
use core::sync::atomic::{AtomicU64, Ordering};

const EARLY_POOL_PAGES: usize = 64;

#[repr(C, align(4096))]
struct Pool([[u64; ENTRIES]; EARLY_POOL_PAGES]);

/// Table pages for boot, before the page allocator exists.
static mut EARLY_POOL: Pool = Pool([[0; ENTRIES]; EARLY_POOL_PAGES]);

static KIMAGE_PA: AtomicU64 = AtomicU64::new(0);
static KIMAGE_LEN: AtomicU64 = AtomicU64::new(0);

/// Allocates one zeroed 4 KiB page for page tables (physical address).
pub type TableAllocator = fn() -> Option<u64>;
/// Takes back a table page [`TableAllocator`] gave (physical address), once the tables no
/// longer link it and no CPU's TLB holds a walk through it.
pub type TableFreer = fn(u64);

struct KernelMem {
    pool_used: usize,
    alloc: Option<TableAllocator>,
    free: Option<TableFreer>,
}

// SAFETY: point 1: `table` reads a table page where it lives (`table_va`): the image mapping
// for early-pool pages, the linear map for the others, the same physical memory the MMU
// walks. Point 2: pool pages and the allocator's pages are fresh, zeroed tables (below).
unsafe impl TableMemory for KernelMem {
    fn alloc_table(&mut self) -> Option<TablePa> {
        if let Some(f) = self.alloc {
            let pa = f()?;
            // SAFETY: `set_table_allocator`'s contract: `f` returns zeroed, 4 KiB-aligned RAM
            // pages that nothing else uses until `prune_linear` gives them back unlinked.
            return Some(unsafe { TablePa::new(pa) });
        }
        if self.pool_used == EARLY_POOL_PAGES {
            return None;
        }
        let va = &raw const EARLY_POOL as u64 + (self.pool_used * 4096) as u64;
        self.pool_used += 1;
        // SAFETY: pool pages are 4 KiB aligned and zero (in .bss), each is handed out once,
        // and nothing but this tree uses the pool.
        Some(unsafe { TablePa::new(image_virt_to_phys(va)) })
    }

    fn table(&self, t: TablePa) -> &[AtomicU64; ENTRIES] {
        let va = table_va(t.pa());
        // SAFETY: `t` is a table page (`TablePa`'s invariant) of this tree: either an
        // early-pool page (mapped by the image mapping) or a page from the table allocator
        // (mapped by the linear map: `set_table_allocator`'s contract). It is 4 KiB aligned
        // and only ever accessed as atomics by the walker and the MMU.
        unsafe { &*(va as *const [AtomicU64; ENTRIES]) }
    }
}

struct KernelPt {
    /// `None` until [`init`].
    root: Option<TablePa>,
    mem: KernelMem,
}

impl KernelPt {
    fn root(&self) -> TablePa {
        self.root.expect("mmu::init has not run")
    }
}

static KERNEL_PT: IrqSpinLock<KernelPt> = IrqSpinLock::new(KernelPt {
    root: None,
    mem: KernelMem {
        pool_used: 0,
        alloc: None,
        free: None,
    },
})
.with_class(crate::lock_class!("kernel_pt"));

unsafe extern "C" {
    static __kernel_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __kernel_end: u8;
}

fn sym(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// Physical address of a virtual address inside the kernel image.
pub fn image_virt_to_phys(va: u64) -> u64 {
    va - KIMAGE_VA + KIMAGE_PA.load(Ordering::Relaxed)
}

/// Physical range the image mapping covers: from `_start` (KIMAGE_VA's physical base plus
/// the Image header's text_offset) to the end of .bss (empty before [`init`]). The
/// text_offset gap below `_start` is ordinary free RAM, reached only through the linear map.
pub fn image_phys_range() -> PhysRange {
    let pa = KIMAGE_PA.load(Ordering::Relaxed);
    PhysRange {
        base: pa + TEXT_OFFSET,
        size: KIMAGE_LEN
            .load(Ordering::Relaxed)
            .saturating_sub(TEXT_OFFSET),
    }
}

/// Where the walker reads a table page: the image mapping for the early pool (inside the
/// image), the linear map for everything else — including pages in the text_offset gap,
/// which the image mapping does not cover.
fn table_va(pa: u64) -> u64 {
    if image_phys_range().contains(pa) {
        pa - KIMAGE_PA.load(Ordering::Relaxed) + KIMAGE_VA
    } else {
        phys_to_virt(pa)
    }
}

/// Builds the final TTBR1 tables with the image mapped W^X and switches to them.
/// `kimage_pa` is the physical address KIMAGE_VA maps (from the boot code).
///
/// # Safety
/// 1. Called once, on the boot CPU, before any other function of this module and before
///    other CPUs start: a second call would switch TTBR1 to fresh tables without the
///    mappings made since, under code that uses them.
/// 2. The CPU still runs on the boot tables, with the boot identity map (TTBR0) that the
///    switch trampoline runs from.
/// 3. `kimage_pa` is the physical address that KIMAGE_VA maps (the boot code's second
///    argument to `kernel_main`), so the new tables map the image where it is.
pub unsafe fn init(kimage_pa: u64) -> Result<(), MapError> {
    KIMAGE_PA.store(kimage_pa, Ordering::Relaxed);
    crate::tlb::init();
    // SAFETY: linker-script symbols; only their addresses are used.
    let (start, text_end, ro_end, end) = unsafe {
        (
            sym(&__kernel_start),
            sym(&__text_end),
            sym(&__rodata_end),
            sym(&__kernel_end),
        )
    };
    KIMAGE_LEN.store(end - KIMAGE_VA, Ordering::Relaxed);
    let mut pt = KERNEL_PT.lock();
    let root = pt.mem.alloc_table().ok_or(MapError::OutOfTables)?;
    pt.root = Some(root);
    // The image's pages from `va` to `va_end`, where they are.
    let p = |va, va_end| PhysRange {
        base: image_virt_to_phys(va),
        size: va_end - va,
    };
    // The 512 KiB below _start (text_offset gap) is left unmapped.
    pgtable::map(
        &mut pt.mem,
        root,
        VirtAddr(start),
        p(start, text_end),
        Attrs::TEXT,
        Granule::Page4K,
    )?;
    pgtable::map(
        &mut pt.mem,
        root,
        VirtAddr(text_end),
        p(text_end, ro_end),
        Attrs::RODATA,
        Granule::Page4K,
    )?;
    pgtable::map(
        &mut pt.mem,
        root,
        VirtAddr(ro_end),
        p(ro_end, end),
        Attrs::RAM,
        Granule::Page4K,
    )?;
    // Jump to the trampoline through its identity-mapped physical address.
    let tramp_pa = image_virt_to_phys(crate::boot::switch_ttbr1_va());
    // SAFETY: the trampoline is a leaf routine that only writes TTBR1_EL1 and invalidates the
    // TLB; it runs from the boot identity map (TTBR0, live by point 2 of the contract), and
    // the new tables map the image at the same virtual addresses with the same physical
    // pages (point 3), so the return address and stack stay valid.
    unsafe {
        let f: extern "C" fn(u64) = core::mem::transmute(tramp_pa as usize);
        f(root.pa());
    }
    Ok(())
}

/// Physical address of the kernel root table (for secondary CPUs).
pub fn kernel_root() -> u64 {
    KERNEL_PT.lock().root().pa()
}

/// Installs the allocator that provides table pages once the page allocator is up, and the
/// freer that takes back the ones [`unmap_linear`] unlinks.
///
/// # Safety
/// Every page `alloc` returns is a 4 KiB-aligned, zeroed page of RAM that the linear map
/// covers (now, and for every page `alloc` may return later), that nothing else uses until
/// it is given to `free`: it is part of the kernel's tables until then. `free` gets only
/// pages `alloc` returned (never early-pool pages), each once, after no table links it and
/// every CPU's TLB dropped the walks through it.
pub unsafe fn set_table_allocator(alloc: TableAllocator, free: TableFreer) {
    let mut pt = KERNEL_PT.lock();
    pt.mem.alloc = Some(alloc);
    pt.mem.free = Some(free);
}

/// Early-pool pages used so far (for reporting).
pub fn early_pool_used() -> usize {
    KERNEL_PT.lock().mem.pool_used
}

/// Maps `range` into the linear map with leaves of at most `max`.
pub fn map_linear(range: PhysRange, attrs: Attrs, max: Granule) -> Result<(), MapError> {
    let mut pt = KERNEL_PT.lock();
    let root = pt.root();
    let va = VirtAddr(phys_to_virt(range.base));
    let r = pgtable::map(&mut pt.mem, root, va, range, attrs, max);
    // Make the new entries visible to the walkers before anyone uses the mapping.
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::ISHST);
    crate::cpu::isb();
    r
}

/// Unmaps `range` from the linear map and invalidates the TLBs of all CPUs, once per leaf
/// removed or by range ([`crate::tlb`]), and returns the bytes that were mapped.
/// Fails (changing nothing) if that would split a block mapping.
pub fn unmap_linear(range: PhysRange) -> Result<u64, MapError> {
    let mut pt = KERNEL_PT.lock();
    let root = pt.root();
    let va = phys_to_virt(range.base);
    let gone = pgtable::unmap(&mut pt.mem, root, VirtAddr(va), range.size)?;
    // Invalid entries are never cached: with nothing removed there is nothing to drop.
    if gone.bytes != 0 {
        crate::tlb::flush_kernel_range(va, range.size, gone.min_leaf);
        prune_linear(&mut pt, VirtAddr(va), range.size);
    }
    Ok(gone.bytes)
}

/// Table pages freed per walk-cache invalidation.
const PRUNE_BATCH: usize = 32;

/// Unlinks the linear map's tables under `[va, va + size)` that hold nothing any more, drops
/// every CPU's cached walks through them (break, with nothing made in their place), then
/// gives the allocator's pages back; early-pool pages stay unlinked in the pool.
fn prune_linear(pt: &mut KernelPt, va: VirtAddr, size: u64) {
    let root = pt.root();
    let Some(free) = pt.mem.free else { return };
    loop {
        let mut batch = [0u64; PRUNE_BATCH];
        let mut k = 0;
        let n = pgtable::prune_empty(&mut pt.mem, root, va, size, PRUNE_BATCH, |t| {
            batch[k] = t.pa();
            k += 1;
        });
        if n == 0 {
            return;
        }
        crate::tlb::flush_kernel_walks();
        for &pa in &batch[..k] {
            if !image_phys_range().contains(pa) {
                free(pa);
            }
        }
        if n < PRUNE_BATCH {
            return;
        }
    }
}

/// Maps an MMIO range (rounded out to pages) into the linear map if it is not mapped yet,
/// and returns its virtual address.
pub fn map_mmio(range: PhysRange) -> Result<VirtAddr, MapError> {
    let (pa, size) = (range.base, range.size);
    let start = pa & !(PAGE_SIZE - 1);
    let end = (pa + size + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
    let mut p = start;
    while p < end {
        // Map page by page, skipping pages already mapped (device ranges may share a page).
        let page = PhysRange {
            base: p,
            size: PAGE_SIZE,
        };
        match map_linear(page, Attrs::MMIO, Granule::Page4K) {
            Ok(()) | Err(MapError::AlreadyMapped(_)) => {}
            Err(e) => return Err(e),
        }
        p += PAGE_SIZE;
    }
    Ok(VirtAddr(phys_to_virt(pa)))
}

/// What the linear map holds at `pa`, if anything.
pub fn translate_linear(pa: u64) -> Option<(u64, Attrs)> {
    let pt = KERNEL_PT.lock();
    pgtable::translate(&pt.mem, pt.root(), phys_to_virt(pa))
}

/// Stops TTBR0 walks on this CPU (after it no longer needs the boot identity map).
pub fn disable_ttbr0_walks() {
    use aarch64_cpu::registers::{Readable, Writeable, TCR_EL1};
    TCR_EL1.set(TCR_EL1.get() | crate::boot::TCR_EPD0);
    crate::cpu::isb();
    // SAFETY: drops any cached TTBR0 translations on this CPU.
    unsafe { core::arch::asm!("tlbi vmalle1", "dsb nsh", "isb", options(nostack)) };
}
