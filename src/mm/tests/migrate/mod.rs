//! Host tests of page references, the reverse map and the migration engine, over the
//! real memory model and fake page tables: a map (address space, va) -> [`Pte`], a fake
//! TLB that caches translations until flushed, and fake page contents (a tag per pfn).
//! The fakes and the kernel-like map/unmap steps live here; [`unit`] covers each outcome
//! and race, [`proptests`] runs random map / unmap / write / pin / unpin / isolate /
//! migrate / offline sequences with every invariant checked after each step.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use super::*;

mod proptests;
mod unit;

pub(super) type SharedMm = Rc<RefCell<Mm<FakeStore>>>;

/// The `Mm` lock of the tests: a `RefCell` the fake page tables can reach too, so they
/// can act "concurrently" (take a pin mid-migration).
pub(super) struct Locked(pub(super) SharedMm);

impl MmLock for Locked {
    type Store = FakeStore;
    fn with_mm<T>(&mut self, f: impl FnOnce(&mut Mm<FakeStore>) -> T) -> T {
        f(&mut self.0.borrow_mut())
    }
}

/// The rmap lock of the tests that watch it: whether it is held is visible to the fake
/// page tables, which assert that the flush and the copies run without it.
struct WatchedRmap {
    rmap: Rc<RefCell<Rmap>>,
    held: Rc<Cell<bool>>,
}

impl RmapLock for WatchedRmap {
    fn with_rmap<T>(&mut self, f: impl FnOnce(&mut Rmap) -> T) -> T {
        assert!(!self.held.replace(true), "rmap lock taken twice");
        let r = f(&mut self.rmap.borrow_mut());
        self.held.set(false);
        r
    }
}

#[derive(Default)]
pub(super) struct Fake {
    pub(super) ptes: HashMap<(AsId, u64), Pte>,
    tlb: HashMap<(AsId, u64), Pfn>,
    pub(super) mem: HashMap<u64, u64>,
    mm: Option<SharedMm>,
    /// Take a pin on this page at the next flush (between unmap and freeze).
    pin_on_flush: Option<Pfn>,
    /// Set while the engine holds the rmap lock ([`WatchedRmap`]).
    rmap_held: Option<Rc<Cell<bool>>>,
    /// Mappings a task touches while the engine copies: each must find a migration entry
    /// (a fault) and joins `waiters`.
    touch_on_copy: Vec<Mapping>,
    /// Tasks asleep on a migration entry.
    waiters: Vec<Mapping>,
    /// What each woken waiter found on retrying: the mapping and the page it reached.
    woken: Vec<(Mapping, Pfn)>,
    /// The reverse map behind [`WatchedRmap`], for the unmaps below.
    rmap: Option<Rc<RefCell<Rmap>>>,
    /// Mappings an unmap takes down while the engine copies: under the rmap lock (which
    /// must be free) it finds a migration entry, drops the lock and waits in
    /// `unmap_waiters`; woken, it unmaps what it then finds.
    unmap_on_copy: Vec<Mapping>,
    unmap_waiters: Vec<Mapping>,
    /// What the woken unmaps took down: the mapping and its page (the mapping's reference
    /// already dropped, as the kernel's unmap does after its flush).
    unmapped: Vec<(Mapping, Pfn)>,
    flushes: u64,
    copies: u64,
    wakes: u64,
}

impl PageTables for Fake {
    fn entry(&self, as_id: AsId, va: u64) -> Pte {
        self.ptes.get(&(as_id, va)).copied().unwrap_or(Pte::None)
    }
    fn replace(&mut self, as_id: AsId, va: u64, new: Pte) -> Pte {
        let old = self.entry(as_id, va);
        if new == Pte::None {
            self.ptes.remove(&(as_id, va));
        } else {
            self.ptes.insert((as_id, va), new);
        }
        old
    }
    fn flush(&mut self, maps: &[Mapping]) {
        self.assert_unlocked("flush");
        self.flushes += 1;
        for m in maps {
            self.tlb.remove(&(m.as_id, m.va));
        }
        if let Some(pfn) = self.pin_on_flush.take() {
            let mm = self.mm.as_ref().expect("race hook needs the shared mm");
            mm.borrow_mut().get_page(pfn).expect("pin before freeze");
        }
    }
    fn copy_page(&mut self, from: Pfn, to: Pfn) {
        self.assert_unlocked("copy");
        // A task touching a page of the batch faults on its migration entry and sleeps.
        for m in core::mem::take(&mut self.touch_on_copy) {
            let pte = self.entry(m.as_id, m.va);
            assert!(
                matches!(pte, Pte::Migrating { .. }),
                "{m:?} during the copy: {pte:?}"
            );
            self.waiters.push(m);
        }
        for m in core::mem::take(&mut self.unmap_on_copy) {
            let rmap = self
                .rmap
                .as_ref()
                .expect("unmap hook needs the shared rmap");
            let _lock = rmap.try_borrow_mut().expect("copy under the rmap lock");
            let pte = self.entry(m.as_id, m.va);
            assert!(
                matches!(pte, Pte::Migrating { .. }),
                "unmap of {m:?} during the copy: {pte:?}"
            );
            self.unmap_waiters.push(m);
        }
        // No CPU may reach `from` any more: no present entry, no cached translation.
        for (k, pte) in &self.ptes {
            assert!(
                !matches!(pte, Pte::Present { pfn, .. } if *pfn == from),
                "copy of {from:?} while {k:?} still maps it"
            );
        }
        assert!(
            !self.tlb.values().any(|p| *p == from),
            "copy of {from:?} with a stale TLB entry"
        );
        if let Some(mm) = &self.mm {
            // Frozen: a new pin (DMA) is refused.
            assert_eq!(mm.borrow_mut().get_page(from), Err(Error::Migrating(from)));
        }
        let tag = self.mem.get(&from.0).copied().unwrap_or(0);
        self.mem.insert(to.0, tag);
        self.copies += 1;
    }
    fn wake_waiters(&mut self) {
        self.wakes += 1;
        // Each waiter retries its access: the entry must be present again.
        for m in core::mem::take(&mut self.waiters) {
            let pfn = self.access(m.as_id, m.va);
            self.woken.push((m, pfn));
        }
        for m in core::mem::take(&mut self.unmap_waiters) {
            let rmap = self.rmap.clone().expect("unmap hook needs the shared rmap");
            let mut rmap = rmap.borrow_mut();
            let Pte::Present { pfn, .. } = self.replace(m.as_id, m.va, Pte::None) else {
                panic!("{m:?} still not present after the wake-up");
            };
            self.flush(&[m]);
            rmap.remove(pfn, m.as_id, m.va).unwrap();
            let mm = self.mm.as_ref().expect("unmap hook needs the shared mm");
            assert_eq!(mm.borrow_mut().put_page(pfn), Ok(false));
            self.unmapped.push((m, pfn));
        }
    }
}

impl Fake {
    /// The flush and the copies run with neither the rmap lock nor the `Mm` lock held.
    fn assert_unlocked(&self, what: &str) {
        if let Some(held) = &self.rmap_held {
            assert!(!held.get(), "{what} under the rmap lock");
        }
        if let Some(mm) = &self.mm {
            assert!(mm.try_borrow_mut().is_ok(), "{what} under the Mm lock");
        }
    }

    /// Fake page tables whose race hooks reach `mm`.
    pub(super) fn over(mm: &SharedMm) -> Fake {
        Fake {
            mm: Some(mm.clone()),
            ..Fake::default()
        }
    }

    /// A task touches `va`: through the TLB, else a walk that fills it. Returns the pfn.
    fn access(&mut self, as_id: AsId, va: u64) -> Pfn {
        let pte = self.entry(as_id, va);
        let Pte::Present { pfn, .. } = pte else {
            panic!("access to {as_id}:{va:#x} faults: {pte:?}");
        };
        let cached = *self.tlb.entry((as_id, va)).or_insert(pfn);
        assert_eq!(cached, pfn, "stale TLB entry for {as_id}:{va:#x}");
        pfn
    }
    fn write(&mut self, as_id: AsId, va: u64, tag: u64) {
        let pfn = self.access(as_id, va);
        self.mem.insert(pfn.0, tag);
    }
    pub(super) fn read(&mut self, as_id: AsId, va: u64) -> u64 {
        let pfn = self.access(as_id, va);
        self.mem.get(&pfn.0).copied().unwrap_or(0)
    }
}

/// 64 MiB of boot memory at 1 GiB (node 0, Normal) and 32 MiB hot-added into Movable at
/// 2 GiB.
fn setup() -> (SharedMm, Rmap, Fake) {
    let mut mm = boot_mm(&[region(GIB, 64 * MIB, 0)], &[resv(GIB, 2 * MIB)]);
    mm.add_online_range(movable(0, 32), NodeId::ZERO, ZoneType::Movable)
        .unwrap();
    let mm = Rc::new(RefCell::new(mm));
    let fake = Fake {
        mm: Some(mm.clone()),
        ..Fake::default()
    };
    (mm, Rmap::new(), fake)
}

/// `[2 GiB + lo MiB, 2 GiB + hi MiB)`.
fn movable(lo: u64, hi: u64) -> PfnRange {
    PfnRange::new(
        Pfn::down(PhysAddr(2 * GIB + lo * MIB)),
        Pfn::down(PhysAddr(2 * GIB + hi * MIB)),
    )
}

/// The pageblock holding `pfn`.
fn pageblock_of(pfn: Pfn) -> PfnRange {
    let start = Pfn(pfn.0 & !(PAGES_PER_PAGEBLOCK - 1));
    PfnRange::new(start, start.add(PAGES_PER_PAGEBLOCK))
}

/// A present entry for `pfn`: keeps an expected entry one line.
fn present(pfn: Pfn, writable: bool) -> Pte {
    Pte::Present { pfn, writable }
}

/// Maps `pfn` at `va` of `as_id` the way the kernel does: rmap entry, a reference, the
/// page-table entry.
pub(super) fn map(
    mm: &SharedMm,
    rmap: &mut Rmap,
    pt: &mut Fake,
    pfn: Pfn,
    as_id: AsId,
    va: u64,
    w: bool,
) {
    rmap.add(pfn, as_id, va).unwrap();
    mm.borrow_mut().get_page(pfn).unwrap();
    pt.replace(as_id, va, Pte::Present { pfn, writable: w });
}

/// A new movable page mapped writable at `va` of `as_id` (as [`map`] does it), holding `tag`.
fn map_new_page(
    mm: &SharedMm,
    rmap: &mut Rmap,
    pt: &mut Fake,
    as_id: AsId,
    va: u64,
    tag: u64,
) -> Pfn {
    let pfn = mm.borrow_mut().alloc_pages(0, AllocFlags::MOVABLE).unwrap();
    map(mm, rmap, pt, pfn, as_id, va, true);
    pt.write(as_id, va, tag);
    pfn
}

/// Unmaps `va` of `as_id`: page-table entry, flush, rmap entry, the reference. Returns
/// whether the page was freed.
pub(super) fn unmap(mm: &SharedMm, rmap: &mut Rmap, pt: &mut Fake, as_id: AsId, va: u64) -> bool {
    let Pte::Present { pfn, .. } = pt.replace(as_id, va, Pte::None) else {
        panic!("unmap of an unmapped address");
    };
    pt.flush(&[Mapping { as_id, va }]);
    rmap.remove(pfn, as_id, va).unwrap();
    mm.borrow_mut().put_page(pfn).unwrap()
}

/// Runs the engine on `range` through [`Locked`] and checks what holds whatever the
/// outcome: every page in use in the range was either moved or counted as failed.
pub(super) fn migrate_counted(
    mm: &SharedMm,
    rmap: &mut Rmap,
    pt: &mut Fake,
    range: PfnRange,
) -> Result<MigrateReport, Error> {
    let used = mm.borrow().used_pages_in(range);
    let r = migrate_range(&mut Locked(mm.clone()), rmap, pt, range)?;
    assert_eq!(
        r.moved_pages + r.failed_pages(),
        used,
        "migrate {range:?}: pages in use = moved + failed"
    );
    Ok(r)
}

fn run(mm: &SharedMm, rmap: &mut Rmap, pt: &mut Fake, range: PfnRange) -> MigrateReport {
    migrate_counted(mm, rmap, pt, range).unwrap()
}

fn checked(mm: &SharedMm, rmap: &Rmap) {
    let m = mm.borrow();
    m.check().unwrap();
    rmap.check(&m).unwrap();
}
