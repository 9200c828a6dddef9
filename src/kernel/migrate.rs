//! Kernel glue of page migration: the reverse map behind its lock, the registry of address
//! spaces, the engine's `PageTables` over real TTBR0 tables, the migration fault handler,
//! and offlining a range by moving its movable pages out (used by unplug).
//!
//! Model: movable pages are mapped only into task address spaces (TTBR0), never reached
//! through the linear map by their users, so a page can move: its mappings are replaced
//! by migration entries (invalid descriptors naming the page), the TLBs of all CPUs are
//! flushed, the page is copied, and the new mappings go in. A task touching the page in
//! between faults, sleeps on [`MIGRATION_WQ`], and retries the access (see
//! `hotmem::mm::migrate` for the ordering that keeps every write). The flush and the copy
//! run with no lock held (interrupts enabled); meanwhile the engine owns the migration
//! entries, and an unmap that finds one waits on the same queue ([`unmap_movable`]).
//!
//! Fault injection (`inject migrate`): the engine's `flush` hook pins the pages of the batch
//! that the plan picks, between the migration entries and the freeze, so each fails as a
//! page pinned mid-move would; the pins are dropped once the batch is done.
//!
//! Locks, in order: `RMAP` (the reverse map; also serialises every page-table change of a
//! movable page: map, unmap, and the engine's two short holds per batch) → `SPACES` (id →
//! address space) → heap → `mm_lock()`. Nothing holding `mm_lock()` takes `RMAP` or
//! `SPACES`. The fault handler takes none of them: it reads its own entry and sleeps;
//! [`unmap_movable`] sleeps with `RMAP` released.

use super::inject;
use super::mem::{mm_lock, KernelStore};
use super::task::{self, WaitQueue};
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use hotmem::mm::migrate::{self, MigrateFailure, MmLock, PageTables, Pte, RmapLock};
use hotmem::mm::rmap::{AsId, Mapping, Rmap};
use hotmem::mm::{MemMap, MemMapItem, MemMapStore, MetaPages, Mm, Pfn, PfnRange, MIGRATE_BATCH};
use hotmem::vmem::MemError;
use hotmem_arch::cpu::IrqSpinLock;
use hotmem_arch::esr::{Esr, TrapFrame};
use hotmem_arch::layout::{self, PAGE_SIZE};
use hotmem_arch::pgtable;
use hotmem_arch::uspace::AddressSpace;

/// The reverse map of every mapped movable page.
pub static RMAP: IrqSpinLock<Rmap> =
    IrqSpinLock::new(Rmap::new()).with_class(hotmem_arch::lock_class!("rmap"));
/// Address spaces that map movable pages, by id.
static SPACES: IrqSpinLock<BTreeMap<AsId, Arc<AddressSpace>>> =
    IrqSpinLock::new(BTreeMap::new()).with_class(hotmem_arch::lock_class!("spaces"));
static NEXT_AS_ID: AtomicU32 = AtomicU32::new(1);
/// Tasks sleeping on a migration entry.
pub static MIGRATION_WQ: WaitQueue = WaitQueue::new();

/// Registers `aspace` for migration and returns its id (the id the reverse map uses).
pub fn register_space(aspace: Arc<AddressSpace>) -> AsId {
    let id = NEXT_AS_ID.fetch_add(1, Ordering::Relaxed);
    SPACES.lock().insert(id, aspace);
    id
}

/// Forgets an address space (after every page in it was unmapped).
pub fn unregister_space(id: AsId) {
    let gone = SPACES.lock().remove(&id);
    drop(gone); // Tables are freed outside the lock.
}

fn space(id: AsId) -> Option<Arc<AddressSpace>> {
    SPACES.lock().get(&id).cloned()
}

/// Bit 1 of a migration entry keeps the write permission to restore (the tag leaves it 0).
const MIGRATION_WRITABLE: u64 = 1 << 1;

/// Encodes an engine [`Pte`] as a descriptor.
pub fn encode(pte: Pte) -> u64 {
    match pte {
        Pte::None => 0,
        Pte::Present { pfn, writable } => pgtable::user_page_desc(pfn.0 * PAGE_SIZE, writable),
        Pte::Migrating { pfn, writable } => {
            pgtable::migration_entry(pfn.0) | if writable { MIGRATION_WRITABLE } else { 0 }
        }
    }
}

/// Decodes a descriptor (`None`: no table or an empty slot).
pub fn decode(desc: Option<u64>) -> Pte {
    let Some(d) = desc else { return Pte::None };
    if d & 1 != 0 {
        // AP[2] (bit 7) set = read-only.
        return Pte::Present {
            pfn: Pfn(pgtable::desc_addr(d) / PAGE_SIZE),
            writable: d & (1 << 7) == 0,
        };
    }
    match pgtable::parse_migration_entry(d & !MIGRATION_WRITABLE) {
        Some(pfn) => Pte::Migrating {
            pfn: Pfn(pfn),
            writable: d & MIGRATION_WRITABLE != 0,
        },
        None => Pte::None,
    }
}

/// The engine's view of the kernel's page tables.
#[derive(Default)]
struct KernelPageTables {
    /// Pages of the batch in flight that fault injection pinned ([`Self::inject_pins`]),
    /// released once the engine is done with the batch.
    injected: arrayvec::ArrayVec<Pfn, MIGRATE_BATCH>,
    /// The address space the last entry looked at, so a batch (usually of one space) looks
    /// it up once, not per entry. Dropped after each batch ([`PageTables::wake_waiters`]),
    /// outside the rmap lock: a batch's mappings stay registered while it runs (an address
    /// space is unregistered only after its pages were unmapped, and an unmap waits for
    /// the migration entries).
    last: core::cell::RefCell<Option<(AsId, Arc<AddressSpace>)>>,
}

impl KernelPageTables {
    /// Fault injection (`inject migrate`): takes a reference on each page of the batch the
    /// plan picks, after its mappings became migration entries and before the engine
    /// freezes it. The freeze then sees a pin that arrived during the move, puts the
    /// mappings back and fails the page as pinned: the engine's own path for in-flight DMA.
    fn inject_pins(&mut self, maps: &[Mapping]) {
        if !inject::migrate_armed() {
            return;
        }
        let mut pages: arrayvec::ArrayVec<Pfn, MIGRATE_BATCH> = arrayvec::ArrayVec::new();
        for m in maps {
            if let Pte::Migrating { pfn, .. } = self.entry(m.as_id, m.va) {
                if !pages.contains(&pfn) && pages.try_push(pfn).is_err() {
                    break;
                }
            }
        }
        for pfn in pages {
            if self.injected.is_full() || !inject::migrate_fails() {
                continue;
            }
            if mm_lock()
                .as_mut()
                .is_some_and(|mm| mm.get_page(pfn).is_ok())
            {
                self.injected.push(pfn);
            }
        }
    }

    /// Drops the references [`Self::inject_pins`] took.
    fn release_injected(&mut self) {
        if self.injected.is_empty() {
            return;
        }
        let mut g = mm_lock();
        for pfn in self.injected.drain(..) {
            if let Some(mm) = g.as_mut() {
                let _ = mm.put_page(pfn);
            }
        }
    }
}

impl KernelPageTables {
    fn space(&self, as_id: AsId) -> Option<Arc<AddressSpace>> {
        let mut last = self.last.borrow_mut();
        match &*last {
            Some((id, a)) if *id == as_id => Some(a.clone()),
            _ => {
                let a = space(as_id)?;
                *last = Some((as_id, a.clone()));
                Some(a)
            }
        }
    }
}

impl PageTables for KernelPageTables {
    fn entry(&self, as_id: AsId, va: u64) -> Pte {
        self.space(as_id).map_or(Pte::None, |a| decode(a.entry(va)))
    }

    fn replace(&mut self, as_id: AsId, va: u64, new: Pte) -> Pte {
        match self.space(as_id) {
            Some(a) => decode(a.replace_entry(va, encode(new))),
            None => Pte::None,
        }
    }

    fn update(&mut self, as_id: AsId, va: u64, f: &mut dyn FnMut(Pte) -> Option<Pte>) -> Pte {
        let Some(a) = self.space(as_id) else {
            return Pte::None;
        };
        decode(a.update_entry(va, |d| f(decode(d)).map(encode)))
    }

    /// One broadcast per address space: by VA for a single page, by ASID for more (each
    /// broadcast stops every vCPU under TCG, and a batch usually hits one space).
    fn flush(&mut self, maps: &[Mapping]) {
        let mut ids: Vec<AsId> = maps.iter().map(|m| m.as_id).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let Some(a) = space(id) else { continue };
            let mut mine = maps.iter().filter(|m| m.as_id == id);
            match (mine.next(), mine.next()) {
                (Some(m), None) => a.flush_page(m.va),
                _ => a.flush_all(),
            }
        }
        self.inject_pins(maps);
    }

    fn copy_page(&mut self, from: Pfn, to: Pfn) {
        let src = layout::phys_to_virt(from.0 * PAGE_SIZE) as *const u8;
        let dst = layout::phys_to_virt(to.0 * PAGE_SIZE) as *mut u8;
        // SAFETY: both are distinct RAM pages in the linear map (page-aligned): `from` is
        // frozen by the engine (no mapping reaches it, TLBs flushed) and `to` was just
        // allocated to the engine, reachable by nobody else.
        unsafe { hotmem_arch::copy::copy_page(dst, src) };
    }

    fn now_ns(&self) -> u64 {
        hotmem_arch::timer::now_ns()
    }

    fn wake_waiters(&mut self) {
        self.last.take();
        MIGRATION_WQ.wake_all();
        // After the batch: the pins fault injection took have done their work.
        self.release_injected();
    }
}

/// The one memory model behind `mm_lock()`, for the model's calls that take the lock once
/// per step (the migration engine, the chunked hotplug calls). They run only once the model
/// exists (hotplug and migration start after `mem::init`).
pub(crate) struct ModelLock;

impl MmLock for ModelLock {
    type Store = KernelStore;
    fn with_mm<T>(&mut self, f: impl FnOnce(&mut Mm<KernelStore>) -> T) -> T {
        let mut g = mm_lock();
        match g.as_mut() {
            Some(m) => f(m),
            None => panic!("memory model used before it exists"),
        }
    }

    /// Without the lock: the kernel's store only writes the given pages through the linear
    /// map, and nothing else reaches them until a later hold installs the mapping.
    fn map_filled<T: MemMapItem + Copy>(&mut self, meta: MetaPages, value: T) -> MemMap<T> {
        KernelStore.map_filled(meta, value)
    }
}

struct KernelRmap;

impl RmapLock for KernelRmap {
    fn with_rmap<T>(&mut self, f: impl FnOnce(&mut Rmap) -> T) -> T {
        f(&mut RMAP.lock())
    }
}

/// Unmaps the movable page at `va` of `aspace` (id `as_id`) under `RMAP` and returns it
/// (`None`: nothing mapped there). Its reverse-map entry goes with the mapping; the caller
/// flushes the TLB before it drops the page's references. A page under migration is
/// waited for with `RMAP` released: the engine owns its migration entry until the new
/// entry is in (the contract in `hotmem::mm::migrate`). Thread context only (it may sleep).
pub fn unmap_movable(aspace: &AddressSpace, as_id: AsId, va: u64) -> Option<Pfn> {
    let migrating = || matches!(decode(aspace.entry(va)), Pte::Migrating { .. });
    loop {
        let mut rmap = RMAP.lock();
        match decode(aspace.entry(va)) {
            Pte::Present { pfn, .. } => {
                aspace.replace_entry(va, 0);
                let _ = rmap.remove(pfn, as_id, va);
                return Some(pfn);
            }
            Pte::Migrating { .. } => {
                drop(rmap);
                MIGRATION_WQ.wait_until(|| !migrating());
            }
            Pte::None => return None,
        }
    }
}

/// Moves every movable page out of the isolated `range`. `Ok` when nothing used is left.
pub fn migrate_out(range: PfnRange) -> Result<migrate::MigrateReport, MemError> {
    let mut pt = KernelPageTables::default();
    let report = migrate::migrate_range(&mut ModelLock, &mut KernelRmap, &mut pt, range);
    pt.release_injected();
    let report = report.map_err(MemError::Mm)?;
    add_profile(&report.profile);
    if report.is_complete() {
        return Ok(report);
    }
    Err(match report.main_failure() {
        Some(MigrateFailure::Pinned) => MemError::Pinned,
        Some(MigrateFailure::NoMemory) => MemError::NoMemory,
        _ => MemError::InUse,
    })
}

/// Adds the engine's profile of one run to the unplug profile (`vmem stats`).
fn add_profile(p: &migrate::MigrateProfile) {
    use hotmem::mm::migrate::Step;
    use hotmem::vmem::stats::{self, Phase};
    for (&step, &(calls, ns, pages)) in Step::ALL.iter().zip(&p.steps) {
        stats::add(Phase::Engine(step), calls, ns, pages);
    }
}

/// The synchronous-exception hook: a task that touched a page under migration sleeps until
/// the new mapping is in place, then retries the access. Anything else is not ours.
pub fn fault_hook(frame: &mut TrapFrame, esr: Esr, far: u64) -> bool {
    // A context with IRQs masked may hold any spin lock (the scheduler's included): it can
    // neither sleep nor let this hook take a lock. Decline before touching any, so such a
    // fault dumps and panics instead of spinning forever.
    if frame.spsr & hotmem_arch::cpu::DAIF_I != 0 {
        return false;
    }
    if !esr.is_data_abort_same_el() || far >= hotmem_arch::uspace::USER_VA_END {
        return false;
    }
    let Some(aspace) = task::current_address_space() else {
        return false;
    };
    let va = far & !(PAGE_SIZE - 1);
    let migrating = || matches!(decode(aspace.entry(va)), Pte::Migrating { .. });
    match decode(aspace.entry(va)) {
        // The migration finished between the fault and this look: just retry.
        Pte::Present { .. } => true,
        Pte::Migrating { .. } if task::can_sleep_in(frame) => {
            MIGRATION_WQ.wait_until(|| !migrating());
            true
        }
        // Nothing mapped, or a context that must not sleep: a real bug.
        _ => false,
    }
}
