//! The kernel heap: the `#[global_allocator]`, a [`SlabHeap`] over page blocks from the
//! memory model.
//!
//! Model: the slab heap (`hotmem::mm::heap`) carves objects out of page blocks that its
//! [`HeapBacking`] hands it. Before the model exists (`mem::MM_READY` false) the backing
//! bump-allocates blocks from a static 2 MiB boot arena, which `Mm::boot` itself uses for
//! its few boot-time structures; arena blocks never go to the page allocator (freed ones
//! stay in the heap for reuse). Afterwards blocks come from the model as unmovable pages,
//! in the linear map.
//!
//! Locks: `HEAP` guards the slab heap and its backing. It is never held together with the
//! memory model's lock (`mm_lock()`): when the slab heap needs pages it gives up with a note
//! of the order it wanted, the allocator drops `HEAP`, takes pages from the model, donates
//! them to the backing and retries (at most four rounds). Blocks the heap frees are handed
//! back to the model the same way, after `HEAP` is dropped.
//!
//! Nothing may allocate from the heap while this CPU holds `mm_lock()` (such an allocation
//! cannot get new pages without deadlocking). The rule is checked in every build: each
//! attempt is counted ([`allocs_under_mm_lock`], which `check` reports and fails on); it is
//! served from what the heap holds, or fails (null); blocks freed then stay in the heap.
//!
//! Out of memory: the heap's pages are kernel memory, so they may use the kernel reserve
//! that workloads and migration never take ([`hotmem::mm::reserve`]). Before the allocator
//! returns null it logs why, with the memory state (free memory and the largest free block
//! per zone, the reserve, the floor), at most once a second and never with `HEAP` held.
//! Callers that can live with a failure use `try_reserve` or [`try_box`]; the others are
//! small fixed-size objects that the reserve covers.

use super::mem::{mm_held_here, mm_lock, MM_READY};
use alloc::boxed::Box;
use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU64, Ordering};
use hotmem::mm::heap::{HeapBacking, SlabHeap};
use hotmem::mm::{AllocFlags, Pfn, PhysAddr, MAX_ORDER};
use hotmem_arch::cpu::IrqSpinLock;
use hotmem_arch::layout::{self, PAGE_SIZE};
use hotmem_arch::timer;

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
})
.with_class(hotmem_arch::lock_class!("heap"));

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
                let _ = mm.free_pages(Pfn::down(PhysAddr(pa)), order);
            }
        }
    }
}

/// Heap allocations attempted while their CPU held `mm_lock()` (each one a bug).
static ALLOCS_UNDER_MM_LOCK: AtomicU64 = AtomicU64::new(0);
/// When the last out-of-memory report was logged (ns), and how many were not logged since.
static LAST_REPORT_NS: AtomicU64 = AtomicU64::new(0);
static UNREPORTED: AtomicU64 = AtomicU64::new(0);
/// Out-of-memory reports logged at most this often.
const REPORT_EVERY_NS: u64 = 1_000_000_000;

/// How many heap allocations were attempted while their CPU held `mm_lock()`; `check`
/// fails while this is not 0.
pub fn allocs_under_mm_lock() -> u64 {
    ALLOCS_UNDER_MM_LOCK.load(Ordering::Relaxed)
}

/// Why the allocator returns null.
#[derive(Clone, Copy)]
enum Refusal {
    /// This CPU holds `mm_lock()`, and the heap holds no room for the request.
    MmLockHeld,
    /// Larger than a max-order block (or, at boot, larger than what is left of the arena).
    TooLarge,
    /// Other CPUs took the pages this one fetched, four times in a row.
    Raced,
    /// The memory model has no page block of the order the heap needs.
    NoPages(u32),
}

/// Logs why a request of `layout` gets null, with the memory state (rate-limited). Called
/// with `HEAP` released.
fn report_refusal(layout: Layout, why: Refusal) {
    let now = timer::now_ns();
    let last = LAST_REPORT_NS.load(Ordering::Relaxed);
    if last != 0 && now.saturating_sub(last) < REPORT_EVERY_NS
        || LAST_REPORT_NS
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        UNREPORTED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let skipped = UNREPORTED.swap(0, Ordering::Relaxed);
    let (size, align) = (layout.size(), layout.align());
    match why {
        Refusal::MmLockHeld => log::error!(
            "heap: no memory for {size} bytes (align {align}): allocated while holding the              memory-model lock ({skipped} more refusals not logged)"
        ),
        Refusal::TooLarge => log::error!(
            "heap: no memory for {size} bytes (align {align}): larger than a max-order block              ({skipped} more refusals not logged)"
        ),
        Refusal::Raced => log::error!(
            "heap: no memory for {size} bytes (align {align}): other CPUs took the pages it \
             fetched ({skipped} more refusals not logged)"
        ),
        Refusal::NoPages(order) => match super::mem::pressure() {
            Some(p) => log::error!(
                "heap: no memory for {size} bytes (align {align}): no free order-{order} block;                  {p} ({skipped} more refusals not logged)"
            ),
            None => log::error!(
                "heap: no memory for {size} bytes (align {align}): no memory model                  ({skipped} more refusals not logged)"
            ),
        },
    }
}

/// `Box::new(value)` that gives the value back instead of panicking when the heap has no
/// memory for it.
pub fn try_box<T>(value: T) -> Result<Box<T>, T> {
    let layout = Layout::new::<T>();
    if layout.size() == 0 {
        return Ok(Box::new(value));
    }
    // SAFETY: the layout's size is not zero.
    let p = unsafe { alloc::alloc::alloc(layout) }.cast::<T>();
    if p.is_null() {
        return Err(value);
    }
    // SAFETY: `p` is a fresh block of `T`'s layout from the global allocator, the allocator
    // and layout `Box` frees it with; it is initialised by the write before the box owns it.
    unsafe {
        p.write(value);
        Ok(Box::from_raw(p))
    }
}

// SAFETY: every path either returns null or a block of at least `layout.size()` bytes
// aligned to `layout.align()` that the slab heap handed out exactly once; `dealloc` returns
// blocks to the slab heap with the same layout.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Fault injection (`inject alloc heap`): fail as if memory had run out.
        if super::inject::heap_fails() {
            return core::ptr::null_mut();
        }
        let mm_held = mm_held_here();
        if mm_held {
            ALLOCS_UNDER_MM_LOCK.fetch_add(1, Ordering::Relaxed);
        }
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
                // The request exceeds a max-order block, or the boot arena is full.
                report_refusal(layout, Refusal::TooLarge);
                return core::ptr::null_mut();
            };
            if mm_held {
                report_refusal(layout, Refusal::MmLockHeld);
                return core::ptr::null_mut();
            }
            if order > MAX_ORDER {
                report_refusal(layout, Refusal::TooLarge);
                return core::ptr::null_mut();
            }
            let pfn = match mm_lock()
                .as_mut()
                .map(|m| m.alloc_pages(order, AllocFlags::UNMOVABLE))
            {
                Some(Ok(pfn)) => pfn,
                _ => {
                    report_refusal(layout, Refusal::NoPages(order));
                    return core::ptr::null_mut();
                }
            };
            let va = layout::phys_to_virt(pfn.addr().0) as usize;
            let mut h = HEAP.lock();
            if h.backing.donated.try_push((va, order)).is_err() {
                drop(h);
                give_back([(va, order)].into_iter().collect());
            }
        }
        report_refusal(layout, Refusal::Raced);
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
