//! Per-task address spaces: a TTBR0 translation tree of 4 KiB pages in the lower half of
//! the virtual address space, tagged with an ASID.
//!
//! Model: an [`AddressSpace`] owns its table pages (root, and level 1-3 tables created on
//! demand) and an ASID; it does not own the pages it maps (their owner frees them). Table
//! pages come from the allocator given to the `unsafe` [`AddressSpace::new`], whose contract
//! is what makes them fit to be tables ([`TablePa`]); reads walk the tree through the linear
//! map without allocating ([`pgtable::table_at`]). Kernel
//! threads use it at EL1: the scheduler calls [`AddressSpace::activate`] when it switches to
//! a task that has one (TTBR0 = root | ASID, TTBR0 walks on) and [`deactivate`] for a task
//! without one (walks off, TTBR0 = reserved ASID 0 with no tables). Leaves are non-global
//! (nG) and EL1-only, so PAN is irrelevant and entries of different spaces never mix in the
//! TLB.
//!
//! Entries of a leaf slot (level 3) move only by single 64-bit atomic stores:
//! `0` (nothing) -> valid ([`AddressSpace::map_page`]); valid -> `0`
//! ([`AddressSpace::unmap_page`], flushes the TLB); any -> any ([`AddressSpace::replace_entry`]:
//! the caller flushes when the old entry was valid; e.g. valid -> migration entry
//! ([`crate::pgtable::migration_entry`]), flush, copy, migration entry -> new valid entry).
//! Valid -> different valid must go through an invalid entry and a flush
//! (break-before-make).
//!
//! ASIDs: 16 bits when ID_AA64MMFR0_EL1.ASIDBits says so (then [`init_cpu`] sets TCR_EL1.AS
//! on every CPU), else 8; ASID 0 is reserved for "no address space". TCR_EL1.A1 stays 0
//! (the ASID comes from TTBR0). A freed ASID's TLB entries are invalidated on all CPUs
//! (`tlbi aside1is`) before the ASID can be reused.
//!
//! Locks: each space has one IRQ-safe lock over its table edits. It is a leaf lock: table
//! pages are allocated with the lock dropped (the allocator may take the memory model's
//! lock), so any of these methods may be called with the memory-model lock held, except
//! [`AddressSpace::new`] and `map_page` (which allocate) and `Drop` (which frees). Reads
//! ([`AddressSpace::entry`]) take no lock: tables are only added while the space lives,
//! never freed. The ASID allocator has its own leaf lock.

use crate::cpu::IrqSpinLock;
use crate::layout::phys_to_virt;
use crate::pgtable::{self, MapError, TableMemory, TablePa, ENTRIES};
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{Readable, Writeable, ID_AA64MMFR0_EL1, TCR_EL1, TTBR0_EL1};
use core::sync::atomic::{AtomicU64, Ordering};

/// Allocates one zeroed 4 KiB table page (physical address).
pub type TableAlloc = fn() -> Option<u64>;
/// Frees a table page from [`TableAlloc`].
pub type TableFree = fn(pa: u64);

/// End (exclusive) of the virtual addresses an address space can map.
pub const USER_VA_END: u64 = 1 << 48;
/// TCR_EL1.AS: 16-bit ASIDs.
const TCR_AS: u64 = 1 << 36;

/// Why an address space could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsError {
    /// Every ASID is in use.
    NoAsid,
    /// The table allocator returned nothing.
    OutOfTables,
}

/// ASID width this CPU implements.
pub fn asid_bits() -> u32 {
    if (ID_AA64MMFR0_EL1.get() >> 4) & 0xf == 0b0010 {
        16
    } else {
        8
    }
}

/// Per-CPU setup (before the first [`AddressSpace::activate`]): 16-bit ASIDs if available.
pub fn init_cpu() {
    if asid_bits() == 16 {
        TCR_EL1.set(TCR_EL1.get() | TCR_AS);
        crate::cpu::isb();
        // SAFETY: drops this CPU's cached translations (the ASID width changed).
        unsafe { core::arch::asm!("tlbi vmalle1", "dsb nsh", "isb", options(nostack)) };
    }
}

struct AsidMap {
    used: [u64; 65536 / 64],
    next: usize,
}

static ASIDS: IrqSpinLock<AsidMap> = IrqSpinLock::new(AsidMap {
    used: [1; 65536 / 64], // ASID 0 reserved
    next: 1,
})
.with_class(crate::lock_class!("asids"));

fn alloc_asid() -> Option<u16> {
    let limit = 1usize << asid_bits();
    let mut m = ASIDS.lock();
    for k in 0..limit {
        let a = (m.next + k) % limit;
        if m.used[a / 64] & (1 << (a % 64)) == 0 {
            m.used[a / 64] |= 1 << (a % 64);
            m.next = a + 1;
            return Some(a as u16);
        }
    }
    None
}

fn free_asid(a: u16) {
    let a = a as usize;
    ASIDS.lock().used[a / 64] &= !(1 << (a % 64));
}

/// A read-only view of address-space tables, reached through the linear map.
struct Linear;

// SAFETY: point 1: `entries` reads the page at the table's physical address through the
// linear map. Point 2: it allocates nothing.
unsafe impl TableMemory for Linear {
    fn table(&self, t: TablePa) -> &[AtomicU64; ENTRIES] {
        entries(t)
    }
}

/// Table pages, reached through the linear map; allocation only from `spare` (filled by the
/// caller with the lock dropped).
struct Tables {
    spare: [Option<TablePa>; 3],
}

// SAFETY: point 1: as for `Linear`. Point 2: spare pages come from the space's `TableAlloc`,
// whose contract (`AddressSpace::new`) makes them fresh, zeroed tables; each is taken once.
unsafe impl TableMemory for Tables {
    fn table(&self, t: TablePa) -> &[AtomicU64; ENTRIES] {
        entries(t)
    }
    fn alloc_table(&mut self) -> Option<TablePa> {
        self.spare.iter_mut().find_map(Option::take)
    }
}

fn entries(t: TablePa) -> &'static [AtomicU64; ENTRIES] {
    // SAFETY: `t` is a table page (`TablePa`'s invariant) of a live address space: from its
    // TableAlloc, 4 KiB aligned, in RAM covered by the linear map (`AddressSpace::new`'s
    // contract); tables are only freed when the space is dropped, and entries are only
    // accessed as atomics.
    unsafe { &*(phys_to_virt(t.pa()) as *const [AtomicU64; ENTRIES]) }
}

/// One TTBR0 address space. See the module doc.
pub struct AddressSpace {
    root: TablePa,
    asid: u16,
    tables: IrqSpinLock<Tables>,
    alloc: TableAlloc,
    free: TableFree,
}

impl AddressSpace {
    /// An empty address space with its own root table and ASID. Its table pages come from
    /// `alloc` and go back to `free` when it is dropped.
    ///
    /// # Safety
    /// Every page `alloc` returns is a 4 KiB-aligned, zeroed page of RAM that the linear map
    /// covers and that nothing else uses until it is passed to `free`.
    pub unsafe fn new(alloc: TableAlloc, free: TableFree) -> Result<AddressSpace, AsError> {
        let asid = alloc_asid().ok_or(AsError::NoAsid)?;
        let Some(root) = alloc() else {
            free_asid(asid);
            return Err(AsError::OutOfTables);
        };
        Ok(AddressSpace {
            // SAFETY: a fresh page from `alloc` (this function's contract), this space's root
            // until `Drop` frees it.
            root: unsafe { TablePa::new(root) },
            asid,
            tables: IrqSpinLock::new(Tables { spare: [None; 3] })
                .with_class(crate::lock_class!("aspace")),
            alloc,
            free,
        })
    }

    /// The ASID tagging this space's TLB entries.
    pub fn asid(&self) -> u16 {
        self.asid
    }

    /// The root table.
    pub fn root(&self) -> TablePa {
        self.root
    }

    fn check_va(va: u64) -> Result<(), MapError> {
        if va % 4096 != 0 || va >= USER_VA_END {
            return Err(MapError::Misaligned);
        }
        Ok(())
    }

    /// Maps the 4 KiB page at `va` to `pa` (Normal WB, EL1, never executable). Fails with
    /// `AlreadyMapped` if the slot holds anything (a valid or a migration entry).
    pub fn map_page(&self, va: u64, pa: u64, writable: bool) -> Result<(), MapError> {
        Self::check_va(va)?;
        if pa % 4096 != 0 {
            return Err(MapError::Misaligned);
        }
        loop {
            {
                let mut t = self.tables.lock();
                match pgtable::l3_table(&mut *t, self.root, va) {
                    Ok(l3) => {
                        let slot = &entries(l3)[pgtable::l3_index(va)];
                        if slot.load(Ordering::Acquire) != 0 {
                            return Err(MapError::AlreadyMapped(va));
                        }
                        slot.store(pgtable::user_page_desc(pa, writable), Ordering::Release);
                        barrier::dsb(barrier::ISHST);
                        crate::cpu::isb();
                        return Ok(());
                    }
                    Err(MapError::OutOfTables) => {}
                    Err(e) => return Err(e),
                }
            }
            // Refill the spare tables with the lock dropped, then retry.
            let page = (self.alloc)().ok_or(MapError::OutOfTables)?;
            let mut t = self.tables.lock();
            match t.spare.iter_mut().find(|p| p.is_none()) {
                // SAFETY: a fresh page from `alloc` (`AddressSpace::new`'s contract); it is a
                // table of this space from now until `Drop` frees it.
                Some(s) => *s = Some(unsafe { TablePa::new(page) }),
                None => {
                    drop(t);
                    (self.free)(page);
                }
            }
        }
    }

    /// The leaf slot of `va`, if its level-3 table exists.
    fn slot(&self, va: u64) -> Option<&'static AtomicU64> {
        if Self::check_va(va).is_err() {
            return None;
        }
        let l3 = pgtable::table_at(&Linear, self.root, va, 3)?;
        Some(&entries(l3)[pgtable::l3_index(va)])
    }

    /// The raw leaf descriptor at `va` (valid, or invalid such as a migration entry);
    /// `None` when nothing is there (no table, or an all-zero entry).
    pub fn entry(&self, va: u64) -> Option<u64> {
        self.slot(va)
            .map(|s| s.load(Ordering::Acquire))
            .filter(|&d| d != 0)
    }

    /// Stores `new_desc` at `va` in one atomic swap and returns the old descriptor; `None`
    /// (nothing stored) if `va` has no level-3 table. If the old entry was valid the caller
    /// must [`flush_page`](Self::flush_page) before relying on the change.
    pub fn replace_entry(&self, va: u64, new_desc: u64) -> Option<u64> {
        let _t = self.tables.lock();
        let slot = self.slot(va)?;
        let old = slot.swap(new_desc, Ordering::AcqRel);
        barrier::dsb(barrier::ISHST);
        crate::cpu::isb();
        Some(old)
    }

    /// Reads `va`'s descriptor and, if `f` gives a new one for it, stores that, in one walk
    /// under the tables lock (the barriers of [`AddressSpace::replace_entry`] when it
    /// stores). Returns the descriptor that was there (`None`: no level-3 table, or an
    /// all-zero entry); `f` sees the same. The caller flushes as for `replace_entry`.
    pub fn update_entry(&self, va: u64, f: impl FnOnce(Option<u64>) -> Option<u64>) -> Option<u64> {
        let _t = self.tables.lock();
        let slot = self.slot(va);
        let old = slot.map(|s| s.load(Ordering::Acquire)).filter(|&d| d != 0);
        if let (Some(slot), Some(new)) = (slot, f(old)) {
            slot.store(new, Ordering::Release);
            barrier::dsb(barrier::ISHST);
            crate::cpu::isb();
        }
        old
    }

    /// Clears `va`'s entry, flushes it from every CPU's TLB if it was valid, and returns the
    /// old descriptor (valid or a migration entry), `None` if nothing was there.
    pub fn unmap_page(&self, va: u64) -> Option<u64> {
        let old = self.replace_entry(va, 0).filter(|&d| d != 0)?;
        if old & 1 != 0 {
            self.flush_page(va);
        }
        Some(old)
    }

    /// Invalidates `va` for this ASID on every CPU (inner shareable broadcast).
    pub fn flush_page(&self, va: u64) {
        crate::tlb::flush_asid_page(self.asid, va);
    }

    /// Invalidates every entry of this ASID on every CPU: one broadcast instead of one per
    /// page when many entries were cleared with [`AddressSpace::replace_entry`].
    pub fn flush_all(&self) {
        crate::tlb::flush_asid(self.asid);
    }

    /// Makes this the CPU's TTBR0 space and enables TTBR0 walks. Scheduler only, IRQs masked.
    pub fn activate(&self) {
        TTBR0_EL1.set(self.root.pa() | ((self.asid as u64) << 48));
        crate::cpu::isb();
        TCR_EL1.set(TCR_EL1.get() & !crate::boot::TCR_EPD0);
        crate::cpu::isb();
    }
}

/// No address space on this CPU: TTBR0 walks off, TTBR0 = reserved ASID 0 (which has no
/// non-global TLB entries). Scheduler only, IRQs masked.
pub fn deactivate() {
    let tcr = TCR_EL1.get();
    if tcr & crate::boot::TCR_EPD0 == 0 {
        TCR_EL1.set(tcr | crate::boot::TCR_EPD0);
        crate::cpu::isb();
    }
    TTBR0_EL1.set(0);
    crate::cpu::isb();
}

impl Drop for AddressSpace {
    /// Frees the table pages (not the mapped pages) and the ASID, after invalidating the
    /// ASID's TLB entries on all CPUs. No CPU may have the space active.
    fn drop(&mut self) {
        self.flush_all();
        let free = self.free;
        pgtable::for_each_subtable(&Linear, self.root, &mut |t| free(t.pa()));
        free(self.root.pa());
        let spare = self.tables.lock().spare;
        for t in spare.into_iter().flatten() {
            free(t.pa());
        }
        free_asid(self.asid);
    }
}
