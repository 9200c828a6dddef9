//! Host tests of page references, the reverse map and the migration engine, over the
//! real memory model and fake page tables: a map (address space, va) -> [`Pte`], a fake
//! TLB that caches translations until flushed, and fake page contents (a tag per pfn).
//! Unit tests cover each outcome and race; a property test runs random map / unmap /
//! write / pin / unpin / isolate / migrate / offline sequences with every invariant
//! checked after each step.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::vec::Vec;

use proptest::prelude::*;

use super::testing::FakeStore;
use super::tests::{region, resv, GIB, MIB};
use super::*;

type SharedMm = Rc<RefCell<Mm<FakeStore>>>;

/// The `Mm` lock of the tests: a `RefCell` the fake page tables can reach too, so they
/// can act "concurrently" (take a pin mid-migration).
struct Locked(SharedMm);

impl MmLock for Locked {
    type Store = FakeStore;
    fn with_mm<T>(&mut self, f: impl FnOnce(&mut Mm<FakeStore>) -> T) -> T {
        f(&mut self.0.borrow_mut())
    }
}

#[derive(Default)]
struct Fake {
    ptes: HashMap<(AsId, u64), Pte>,
    tlb: HashMap<(AsId, u64), Pfn>,
    mem: HashMap<u64, u64>,
    mm: Option<SharedMm>,
    /// Take a pin on this page at the next flush (between unmap and freeze).
    pin_on_flush: Option<Pfn>,
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
    }
}

impl Fake {
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
    fn read(&mut self, as_id: AsId, va: u64) -> u64 {
        let pfn = self.access(as_id, va);
        self.mem.get(&pfn.0).copied().unwrap_or(0)
    }
}

/// 64 MiB of boot memory at 1 GiB (node 0, Normal) and 32 MiB hot-added into Movable at
/// 2 GiB.
fn setup() -> (SharedMm, Rmap, Fake) {
    let mut mm = Mm::boot(
        &[region(GIB, 64 * MIB, 0)],
        &[resv(GIB, 2 * MIB)],
        40,
        FakeStore::default(),
    )
    .unwrap();
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
        PhysAddr(2 * GIB + lo * MIB).pfn_down(),
        PhysAddr(2 * GIB + hi * MIB).pfn_down(),
    )
}

/// The pageblock holding `pfn`.
fn pageblock_of(pfn: Pfn) -> PfnRange {
    let start = Pfn(pfn.0 & !(PAGES_PER_PAGEBLOCK - 1));
    PfnRange::new(start, start.add(PAGES_PER_PAGEBLOCK))
}

/// Maps `pfn` at `va` of `as_id` the way the kernel does: rmap entry, a reference, the
/// page-table entry.
fn map(mm: &SharedMm, rmap: &mut Rmap, pt: &mut Fake, pfn: Pfn, as_id: AsId, va: u64, w: bool) {
    rmap.add(pfn, as_id, va).unwrap();
    mm.borrow_mut().get_page(pfn).unwrap();
    pt.replace(as_id, va, Pte::Present { pfn, writable: w });
}

/// Unmaps `va` of `as_id`: page-table entry, flush, rmap entry, the reference. Returns
/// whether the page was freed.
fn unmap(mm: &SharedMm, rmap: &mut Rmap, pt: &mut Fake, as_id: AsId, va: u64) -> bool {
    let Pte::Present { pfn, .. } = pt.replace(as_id, va, Pte::None) else {
        panic!("unmap of an unmapped address");
    };
    pt.flush(&[Mapping { as_id, va }]);
    rmap.remove(pfn, as_id, va).unwrap();
    mm.borrow_mut().put_page(pfn).unwrap()
}

fn run(mm: &SharedMm, rmap: &mut Rmap, pt: &mut Fake, range: PfnRange) -> MigrateReport {
    migrate_range(&mut Locked(mm.clone()), rmap, pt, range).unwrap()
}

fn checked(mm: &SharedMm, rmap: &Rmap) {
    let m = mm.borrow();
    m.check().unwrap();
    rmap.check(&m).unwrap();
}

#[test]
fn references_and_pins() {
    let (mm, _, _) = setup();
    let mut m = mm.borrow_mut();
    let pfn = m.alloc_pages(0, AllocFlags::MOVABLE).unwrap();
    assert_eq!(m.page_refcount(pfn), Ok(1));
    assert_eq!(m.is_pinned(pfn, 0), Ok(false));
    assert_eq!(m.get_page(pfn), Ok(2)); // a mapping's reference
    assert_eq!(m.is_pinned(pfn, 1), Ok(false));
    assert_eq!(m.get_page(pfn), Ok(3)); // a pin
    assert_eq!(m.is_pinned(pfn, 1), Ok(true));
    assert_eq!(m.free_pages(pfn, 0), Err(Error::BadFree(pfn)));
    assert_eq!(m.put_page(pfn), Ok(false));
    assert_eq!(m.put_page(pfn), Ok(false));
    assert_eq!(m.put_page(pfn), Ok(true));
    assert_eq!(m.get_page(pfn), Err(Error::NotAllocated(pfn)));
    assert_eq!(m.put_page(pfn), Err(Error::NotAllocated(pfn)));
    // Only heads of allocations take references; the last put frees the whole order.
    let big = m.alloc_pages(2, AllocFlags::UNMOVABLE).unwrap();
    assert_eq!(m.get_page(big.add(1)), Err(Error::NotAllocated(big.add(1))));
    let free_before = m.total_stats().free_pages;
    assert_eq!(m.put_page(big), Ok(true));
    assert_eq!(m.total_stats().free_pages, free_before + 4);
    // Reserved memory is not an allocation.
    let reserved = PhysAddr(GIB).pfn_down();
    assert_eq!(m.get_page(reserved), Err(Error::NotAllocated(reserved)));
    m.check().unwrap();
}

#[test]
fn rmap_add_remove_move() {
    let (mm, mut rmap, _) = setup();
    let (a, b) = {
        let mut m = mm.borrow_mut();
        (
            m.alloc_pages(0, AllocFlags::MOVABLE).unwrap(),
            m.alloc_pages(0, AllocFlags::MOVABLE).unwrap(),
        )
    };
    assert_eq!(rmap.add(a, 1, 0x1001), Err(Error::BadAddress(0x1001)));
    rmap.add(a, 1, 0x1000).unwrap();
    assert_eq!(rmap.add(a, 1, 0x1000), Err(Error::AlreadyMapped(a)));
    rmap.add(a, 2, 0x1000).unwrap();
    rmap.add(a, 1, 0x5000).unwrap();
    assert_eq!(rmap.map_count(a), 3);
    assert_eq!((rmap.nr_pages(), rmap.nr_mappings()), (1, 3));
    // Mappings hold references: without them the check fails.
    assert!(rmap.check(&mm.borrow()).is_err());
    for _ in 0..3 {
        mm.borrow_mut().get_page(a).unwrap();
    }
    checked(&mm, &rmap);
    assert_eq!(rmap.remove(a, 3, 0x1000), Err(Error::NotMapped(a)));
    rmap.remove(a, 1, 0x1000).unwrap();
    rmap.remove(a, 2, 0x1000).unwrap();
    assert_eq!(
        rmap.mappings(a),
        &[Mapping {
            as_id: 1,
            va: 0x5000
        }]
    );
    assert_eq!(rmap.remove(b, 1, 0x5000), Err(Error::NotMapped(b)));
    assert_eq!(rmap.move_page(b, a), Err(Error::AlreadyMapped(a)));
    assert_eq!(rmap.move_page(b, Pfn(7)), Err(Error::NotMapped(b)));
    rmap.move_page(a, b).unwrap();
    assert_eq!(rmap.map_count(a), 0);
    assert_eq!(rmap.map_count(b), 1);
    assert_eq!(rmap.pages_in(PfnRange::new(b, b.add(1))).count(), 1);
    assert_eq!(rmap.pages_in(PfnRange::new(a, a.add(1))).count(), 0);
    // b has one mapping but only its own reference: refcount 1 >= 1 passes.
    checked(&mm, &rmap);
    // A mapped page that is freed is caught.
    rmap.move_page(b, a).unwrap();
    mm.borrow_mut().put_page(b).unwrap();
    rmap.move_page(a, b).unwrap();
    assert!(rmap.check(&mm.borrow()).is_err());
}

#[test]
fn migrate_moves_mapped_pages_and_keeps_contents() {
    let (mm, mut rmap, mut pt) = setup();
    let mut pages = Vec::new();
    for i in 0..40u64 {
        let pfn = mm.borrow_mut().alloc_pages(0, AllocFlags::MOVABLE).unwrap();
        let va = 0x40_0000 + i * PAGE_SIZE;
        map(&mm, &mut rmap, &mut pt, pfn, 1, va, i % 2 == 0);
        if i % 5 == 0 {
            // Shared with a second address space, read-only there.
            map(&mm, &mut rmap, &mut pt, pfn, 2, va + 0x1000_0000, false);
        }
        pt.write(1, va, 1000 + i);
        pages.push((pfn, va));
    }
    checked(&mm, &rmap);
    let range = pageblock_of(pages[0].0);
    assert!(pages.iter().all(|(p, _)| range.contains(*p)));
    let used = mm.borrow().used_pages_in(range);
    assert_eq!(used, 40);
    mm.borrow_mut().isolate_range(range).unwrap();
    let r = run(&mm, &mut rmap, &mut pt, range);
    assert_eq!(r.moved_pages, 40);
    assert_eq!(r.bytes_copied, 40 * PAGE_SIZE);
    assert!(r.is_complete() && r.first_failure.is_none() && r.main_failure().is_none());
    // One flush and one wake-up per batch.
    let batches = 40u64.div_ceil(MIGRATE_BATCH as u64);
    assert_eq!((pt.copies, pt.flushes, pt.wakes), (40, batches, batches));
    checked(&mm, &rmap);
    assert_eq!(mm.borrow().used_pages_in(range), 0);
    for (i, &(old, va)) in pages.iter().enumerate() {
        let i = i as u64;
        let Pte::Present { pfn, writable } = pt.entry(1, va) else {
            panic!("lost mapping");
        };
        assert!(!range.contains(pfn) && pfn != old);
        assert_eq!(writable, i % 2 == 0);
        assert_eq!(pt.read(1, va), 1000 + i);
        assert_eq!(mm.borrow().page_refcount(pfn), Ok(1 + rmap.map_count(pfn)));
        if i % 5 == 0 {
            let shared = pt.entry(2, va + 0x1000_0000);
            assert_eq!(
                shared,
                Pte::Present {
                    pfn,
                    writable: false
                }
            );
        }
    }
    // The range is free: it can go offline.
    mm.borrow_mut().offline_range(range).unwrap();
    checked(&mm, &rmap);
}

#[test]
fn migrate_reports_each_cause() {
    let (mm, mut rmap, mut pt) = setup();
    let (mapped, pinned, unmapped) = {
        let mut m = mm.borrow_mut();
        let a = m.alloc_pages(0, AllocFlags::MOVABLE).unwrap();
        let b = m.alloc_pages(0, AllocFlags::MOVABLE).unwrap();
        let c = m.alloc_pages(0, AllocFlags::MOVABLE).unwrap();
        (a, b, c)
    };
    map(&mm, &mut rmap, &mut pt, mapped, 1, 0x1000, true);
    map(&mm, &mut rmap, &mut pt, pinned, 1, 0x2000, true);
    mm.borrow_mut().get_page(pinned).unwrap(); // DMA
    let big = mm.borrow_mut().alloc_pages(3, AllocFlags::MOVABLE).unwrap();
    let range = pageblock_of(mapped);
    assert!([mapped, pinned, unmapped, big]
        .iter()
        .all(|p| range.contains(*p)));
    mm.borrow_mut().isolate_range(range).unwrap();
    let r = run(&mm, &mut rmap, &mut pt, range);
    assert_eq!(
        (
            r.moved_pages,
            r.pinned_pages,
            r.unmovable_pages,
            r.no_memory_pages
        ),
        (1, 1, 1 + 8, 0)
    );
    let first = [pinned, unmapped, big].into_iter().min().unwrap();
    assert_eq!(r.first_failure.map(|f| f.0), Some(first));
    assert_eq!(r.main_failure(), Some(MigrateFailure::Unmovable));
    assert_eq!(mm.borrow().used_pages_in(range), r.failed_pages());
    assert_eq!(
        pt.entry(1, 0x2000),
        Pte::Present {
            pfn: pinned,
            writable: true
        }
    );
    assert_eq!(
        mm.borrow_mut().offline_range(range),
        Err(Error::Busy(first))
    );
    checked(&mm, &rmap);
    // Unpinned, mapped, freed: everything leaves.
    mm.borrow_mut().put_page(pinned).unwrap();
    map(&mm, &mut rmap, &mut pt, unmapped, 3, 0x3000, true);
    assert!(mm.borrow_mut().put_page(big).unwrap());
    let r = run(&mm, &mut rmap, &mut pt, range);
    assert_eq!((r.moved_pages, r.failed_pages()), (2, 0));
    mm.borrow_mut().offline_range(range).unwrap();
    checked(&mm, &rmap);
    // Kernel memory in the Normal zone is unmovable.
    let boot = PfnRange::new(PhysAddr(GIB).pfn_down(), PhysAddr(GIB + 2 * MIB).pfn_down());
    mm.borrow_mut().isolate_range(boot).unwrap();
    let r = run(&mm, &mut rmap, &mut pt, boot);
    assert_eq!(r.unmovable_pages, mm.borrow().used_pages_in(boot));
    assert!(r.unmovable_pages >= 512 && r.moved_pages == 0);
}

/// Batches with mixed outcomes: over two batches, a page pinned beforehand, a pin that
/// arrives during the first batch's flush, and a page whose reverse map disagrees with the
/// page tables; every other page of the same batches still moves, the failed ones stay
/// mapped where they were, and nothing leaks.
#[test]
fn batches_with_mixed_outcomes_move_the_rest() {
    let (mm, mut rmap, mut pt) = setup();
    let n = MIGRATE_BATCH as u64 * 2 + 6;
    let mut pages = Vec::new();
    for i in 0..n {
        let pfn = mm.borrow_mut().alloc_pages(0, AllocFlags::MOVABLE).unwrap();
        let va = 0x40_0000 + i * PAGE_SIZE;
        map(&mm, &mut rmap, &mut pt, pfn, 1, va, true);
        pt.write(1, va, 5000 + i);
        pages.push((pfn, va));
    }
    pages.sort_unstable(); // batches go in pfn order
    let range = pageblock_of(pages[0].0);
    assert!(pages.iter().all(|(p, _)| range.contains(*p)));
    // In batch 1: a pin during the flush. In batch 2: a pin from before, and a mapping the
    // page tables lost (a stale reverse-map entry).
    let (racing, pinned, stale) = (
        pages[5].0,
        pages[MIGRATE_BATCH + 3].0,
        pages[MIGRATE_BATCH + 9],
    );
    pt.pin_on_flush = Some(racing);
    mm.borrow_mut().get_page(pinned).unwrap();
    pt.replace(1, stale.1, Pte::None);
    mm.borrow_mut().isolate_range(range).unwrap();
    let free = mm.borrow().total_stats().free_pages;
    let r = run(&mm, &mut rmap, &mut pt, range);
    assert_eq!(
        (r.moved_pages, r.pinned_pages, r.unmovable_pages),
        (n - 3, 2, 1)
    );
    assert_eq!(r.first_failure, Some((racing, MigrateFailure::Pinned)));
    // Destinations of the failed pages went back: free only shrank by the moved pages'
    // new homes, and the old homes of the moved ones came free.
    assert_eq!(mm.borrow().total_stats().free_pages, free);
    assert_eq!(mm.borrow().used_pages_in(range), 3);
    for (i, &(old, va)) in pages.iter().enumerate() {
        let failed = [racing, pinned].contains(&old);
        if old == stale.0 {
            assert_eq!(pt.entry(1, va), Pte::None);
            continue;
        }
        let Pte::Present { pfn, .. } = pt.entry(1, va) else {
            panic!("page {i} left unmapped");
        };
        assert_eq!(pfn == old, failed, "page {i}");
        if failed {
            assert_eq!(
                mm.borrow().page_migrating(old),
                Ok(false),
                "page {i} unfrozen"
            );
        }
        let tag = 5000 + (va - 0x40_0000) / PAGE_SIZE;
        assert_eq!(pt.read(1, va), tag, "page {i} kept its contents");
    }
    // The pins dropped and the stale page freed by its owner: the rest moves.
    mm.borrow_mut().put_page(racing).unwrap();
    mm.borrow_mut().put_page(pinned).unwrap();
    rmap.remove(stale.0, 1, stale.1).unwrap();
    assert!(
        !mm.borrow_mut().put_page(stale.0).unwrap(),
        "the mapping's reference"
    );
    assert!(
        mm.borrow_mut().put_page(stale.0).unwrap(),
        "its owner frees it"
    );
    let r = run(&mm, &mut rmap, &mut pt, range);
    assert_eq!((r.moved_pages, r.failed_pages()), (2, 0));
    mm.borrow_mut().offline_range(range).unwrap();
    checked(&mm, &rmap);
}

#[test]
fn migrate_without_memory_leaves_everything_in_place() {
    let (mm, mut rmap, mut pt) = setup();
    let pfn = mm.borrow_mut().alloc_pages(0, AllocFlags::MOVABLE).unwrap();
    let range = pageblock_of(pfn);
    map(&mm, &mut rmap, &mut pt, pfn, 1, 0x1000, true);
    pt.write(1, 0x1000, 42);
    mm.borrow_mut().isolate_range(range).unwrap();
    // Take every other free page.
    let mut hog = Vec::new();
    while let Ok(p) = mm.borrow_mut().alloc_pages(0, AllocFlags::MOVABLE) {
        hog.push(p);
    }
    let free = mm.borrow().total_stats().free_pages;
    let r = run(&mm, &mut rmap, &mut pt, range);
    assert_eq!((r.moved_pages, r.no_memory_pages), (0, 1));
    assert_eq!(r.first_failure, Some((pfn, MigrateFailure::NoMemory)));
    assert_eq!(
        r.to_string(),
        format!("moved=0 copied=0KiB pinned=0 unmovable=0 no_memory=1 first={pfn} (no_memory)")
    );
    assert_eq!(mm.borrow().total_stats().free_pages, free);
    assert_eq!(pt.read(1, 0x1000), 42);
    checked(&mm, &rmap);
    // One page back is enough.
    mm.borrow_mut().put_page(hog.pop().unwrap()).unwrap();
    let r = run(&mm, &mut rmap, &mut pt, range);
    assert_eq!(r.moved_pages, 1);
    assert_eq!(pt.read(1, 0x1000), 42);
    checked(&mm, &rmap);
}

#[test]
fn pin_arriving_during_unmap_aborts_and_restores() {
    let (mm, mut rmap, mut pt) = setup();
    let pfn = mm.borrow_mut().alloc_pages(0, AllocFlags::MOVABLE).unwrap();
    let range = pageblock_of(pfn);
    map(&mm, &mut rmap, &mut pt, pfn, 1, 0x1000, true);
    map(&mm, &mut rmap, &mut pt, pfn, 2, 0x8000, false);
    pt.write(1, 0x1000, 7);
    mm.borrow_mut().isolate_range(range).unwrap();
    let free = mm.borrow().total_stats().free_pages;
    pt.pin_on_flush = Some(pfn);
    let r = run(&mm, &mut rmap, &mut pt, range);
    assert_eq!((r.moved_pages, r.pinned_pages), (0, 1));
    assert_eq!(
        pt.entry(1, 0x1000),
        Pte::Present {
            pfn,
            writable: true
        }
    );
    assert_eq!(
        pt.entry(2, 0x8000),
        Pte::Present {
            pfn,
            writable: false
        }
    );
    assert_eq!((pt.copies, pt.wakes), (0, 1));
    assert_eq!(mm.borrow().total_stats().free_pages, free);
    assert_eq!(mm.borrow().page_migrating(pfn), Ok(false));
    assert_eq!(mm.borrow().page_refcount(pfn), Ok(4));
    checked(&mm, &rmap);
}

#[test]
fn migrate_refuses_bad_ranges_and_stale_rmap() {
    let (mm, mut rmap, mut pt) = setup();
    let range = movable(0, 4);
    let mut lm = Locked(mm.clone());
    assert_eq!(
        migrate_range(&mut lm, &mut rmap, &mut pt, range),
        Err(Error::NotIsolated(range.start))
    );
    mm.borrow_mut().isolate_range(movable(0, 2)).unwrap();
    assert_eq!(
        migrate_range(&mut lm, &mut rmap, &mut pt, range),
        Err(Error::NotIsolated(movable(2, 4).start))
    );
    let odd = PfnRange::new(range.start, range.start.add(1));
    assert_eq!(
        migrate_range(&mut lm, &mut rmap, &mut pt, odd),
        Err(Error::Unaligned)
    );
    let empty = PfnRange::new(range.start, range.start);
    assert_eq!(
        migrate_range(&mut lm, &mut rmap, &mut pt, empty),
        Err(Error::InvalidRange)
    );
    // A reverse-map entry the page tables don't have: the page stays, nothing changes.
    mm.borrow_mut().unisolate_range(movable(0, 2)).unwrap();
    let pfn = mm.borrow_mut().alloc_pages(0, AllocFlags::MOVABLE).unwrap();
    map(&mm, &mut rmap, &mut pt, pfn, 1, 0x1000, true);
    rmap.add(pfn, 1, 0x2000).unwrap();
    mm.borrow_mut().get_page(pfn).unwrap();
    let block = pageblock_of(pfn);
    mm.borrow_mut().isolate_range(block).unwrap();
    let r = migrate_range(&mut lm, &mut rmap, &mut pt, block).unwrap();
    assert_eq!((r.moved_pages, r.unmovable_pages), (0, 1));
    assert_eq!(
        pt.entry(1, 0x1000),
        Pte::Present {
            pfn,
            writable: true
        }
    );
    checked(&mm, &rmap);
}

#[test]
fn used_pages_in_counts_allocated_and_reserved() {
    let (mm, _, _) = setup();
    let mut m = mm.borrow_mut();
    assert_eq!(m.used_pages_in(movable(0, 32)), 0);
    let a = m.alloc_pages(2, AllocFlags::MOVABLE).unwrap();
    assert_eq!(m.used_pages_in(movable(0, 32)), 4);
    assert_eq!(m.used_pages_in(PfnRange::new(a.add(1), a.add(3))), 2);
    let boot = PfnRange::new(PhysAddr(GIB).pfn_down(), PhysAddr(GIB + 2 * MIB).pfn_down());
    assert_eq!(m.used_pages_in(boot), 512); // the reservation
                                            // Outside memory: nothing.
    let nothing = PfnRange::new(PhysAddr(8 * GIB).pfn_down(), PhysAddr(9 * GIB).pfn_down());
    assert_eq!(m.used_pages_in(nothing), 0);
}

// ---- property test ----

/// A page as the test sees it (its pfn changes when it migrates).
#[derive(Clone, Debug)]
struct LPage {
    pfn: Pfn,
    tag: u64,
    maps: Vec<(AsId, u64)>,
    pins: u32,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Alloc,
    Map(usize, AsId, bool),
    Unmap(usize, usize),
    Write(usize),
    Pin(usize),
    Unpin(usize),
    Free(usize),
    Isolate(usize),
    Unisolate(usize),
    /// Migrate fixed range `r`; then offline and online it again if that's possible.
    Migrate(usize),
    /// Isolate the pageblock of page `i`, migrate it (with a pin racing in when `true`),
    /// un-isolate.
    MigrateOf(usize, bool),
}

const RANGES: [(u64, u64); 4] = [(0, 2), (2, 4), (0, 8), (8, 32)];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Alloc),
        4 => (any::<usize>(), 1..4u32, any::<bool>()).prop_map(|(i, a, w)| Op::Map(i, a, w)),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Op::Unmap(i, j)),
        2 => any::<usize>().prop_map(Op::Write),
        1 => any::<usize>().prop_map(Op::Pin),
        1 => any::<usize>().prop_map(Op::Unpin),
        1 => any::<usize>().prop_map(Op::Free),
        1 => (0..RANGES.len()).prop_map(Op::Isolate),
        1 => (0..RANGES.len()).prop_map(Op::Unisolate),
        2 => (0..RANGES.len()).prop_map(Op::Migrate),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(i, r)| Op::MigrateOf(i, r)),
    ]
}

struct World {
    mm: SharedMm,
    rmap: Rmap,
    pt: Fake,
    pages: Vec<LPage>,
    next_va: u64,
    next_tag: u64,
    /// Pages moved, pinned failures, races lost by the pin, ranges taken offline.
    seen: [u64; 4],
}

impl World {
    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// Runs the engine on `range` and checks what it reports against what moved. `None`
    /// when the range is not entirely isolated (the engine refuses it).
    fn migrate(&mut self, range: PfnRange) -> Result<Option<MigrateReport>, TestCaseError> {
        let used = self.mm.borrow().used_pages_in(range);
        let r = match migrate_range(
            &mut Locked(self.mm.clone()),
            &mut self.rmap,
            &mut self.pt,
            range,
        ) {
            Ok(r) => r,
            Err(Error::NotIsolated(_)) => return Ok(None),
            Err(e) => return Err(TestCaseError::fail(format!("migrate {range:?}: {e}"))),
        };
        prop_assert_eq!(r.moved_pages + r.failed_pages(), used);
        prop_assert_eq!(self.mm.borrow().used_pages_in(range), r.failed_pages());
        prop_assert_eq!(r.bytes_copied, r.moved_pages * PAGE_SIZE);
        let mut moved = 0;
        for p in &mut self.pages {
            let Some(&(a, va)) = p.maps.first() else {
                continue;
            };
            let Pte::Present { pfn, .. } = self.pt.entry(a, va) else {
                return Err(TestCaseError::fail("mapping lost"));
            };
            if pfn != p.pfn {
                prop_assert!(p.pins == 0, "pinned page {:?} moved", p.pfn);
                prop_assert!(range.contains(p.pfn) && !range.contains(pfn));
                moved += 1;
                p.pfn = pfn;
            }
        }
        prop_assert_eq!(moved, r.moved_pages);
        self.seen[0] += r.moved_pages;
        self.seen[1] += r.pinned_pages;
        Ok(Some(r))
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        let n = self.pages.len();
        match op {
            Op::Alloc => {
                let got = self.mm.borrow_mut().alloc_pages(0, AllocFlags::MOVABLE);
                if let Ok(pfn) = got {
                    let tag = self.tag();
                    self.pt.mem.insert(pfn.0, tag);
                    self.pages.push(LPage {
                        pfn,
                        tag,
                        maps: Vec::new(),
                        pins: 0,
                    });
                }
            }
            Op::Map(i, a, w) if n > 0 => {
                let va = self.next_va;
                self.next_va += PAGE_SIZE;
                let p = &mut self.pages[i % n];
                map(&self.mm, &mut self.rmap, &mut self.pt, p.pfn, a, va, w);
                p.maps.push((a, va));
                prop_assert_eq!(self.pt.read(a, va), p.tag);
            }
            Op::Unmap(i, j) if n > 0 && !self.pages[i % n].maps.is_empty() => {
                let p = &mut self.pages[i % n];
                let (a, va) = p.maps.remove(j % p.maps.len());
                let freed = unmap(&self.mm, &mut self.rmap, &mut self.pt, a, va);
                prop_assert!(!freed);
            }
            Op::Write(i) if n > 0 && !self.pages[i % n].maps.is_empty() => {
                let tag = self.tag();
                let p = &mut self.pages[i % n];
                let (a, va) = p.maps[tag as usize % p.maps.len()];
                self.pt.write(a, va, tag);
                p.tag = tag;
            }
            Op::Pin(i) if n > 0 => {
                let p = &mut self.pages[i % n];
                self.mm.borrow_mut().get_page(p.pfn).unwrap();
                p.pins += 1;
            }
            Op::Unpin(i) if n > 0 && self.pages[i % n].pins > 0 => {
                let p = &mut self.pages[i % n];
                prop_assert_eq!(self.mm.borrow_mut().put_page(p.pfn), Ok(false));
                p.pins -= 1;
            }
            Op::Free(i) if n > 0 && self.pages[i % n].pins == 0 => {
                let p = self.pages.swap_remove(i % n);
                for (a, va) in p.maps {
                    prop_assert!(!unmap(&self.mm, &mut self.rmap, &mut self.pt, a, va));
                }
                prop_assert_eq!(self.mm.borrow_mut().put_page(p.pfn), Ok(true));
            }
            Op::Isolate(r) => {
                let (lo, hi) = RANGES[r];
                let _ = self.mm.borrow_mut().isolate_range(movable(lo, hi));
            }
            Op::Unisolate(r) => {
                let (lo, hi) = RANGES[r];
                let _ = self.mm.borrow_mut().unisolate_range(movable(lo, hi));
            }
            Op::Migrate(r) => {
                let (lo, hi) = RANGES[r];
                let range = movable(lo, hi);
                if let Some(r) = self.migrate(range)? {
                    if r.is_complete() {
                        // Everything left: the range goes offline and comes back.
                        let mut m = self.mm.borrow_mut();
                        m.offline_range(range)
                            .map_err(|e| TestCaseError::fail(format!("offline: {e}")))?;
                        m.check().map_err(|e| TestCaseError::fail(e.reason))?;
                        m.online_range(range, ZoneType::Movable).unwrap();
                        self.seen[3] += 1;
                    }
                }
            }
            Op::MigrateOf(i, race) if n > 0 => {
                let p = &self.pages[i % n];
                let block = pageblock_of(p.pfn);
                let isolated_here = self.mm.borrow_mut().isolate_range(block).is_ok();
                let racing = race && !p.maps.is_empty() && p.pins == 0;
                if racing {
                    self.pt.pin_on_flush = Some(p.pfn);
                }
                let before = p.pfn;
                let r = self.migrate(block)?.expect("isolated");
                if racing {
                    // The pin came in after the pin check: the page stayed.
                    let p = &mut self.pages[i % n];
                    prop_assert_eq!(p.pfn, before);
                    prop_assert!(self.pt.pin_on_flush.is_none());
                    prop_assert!(r.pinned_pages >= 1);
                    p.pins += 1;
                    self.seen[2] += 1;
                }
                if isolated_here {
                    self.mm.borrow_mut().unisolate_range(block).unwrap();
                }
            }
            _ => {}
        }
        self.verify()
    }

    /// Every invariant the engine promises.
    fn verify(&mut self) -> Result<(), TestCaseError> {
        let fail = |e: CheckError| TestCaseError::fail(e.reason);
        {
            let m = self.mm.borrow();
            m.check().map_err(fail)?;
            self.rmap.check(&m).map_err(fail)?;
            // No page lost: free + ours == managed.
            let t = m.total_stats();
            prop_assert_eq!(t.free_pages + self.pages.len() as u64, t.managed_pages);
            let mut seen = HashSet::new();
            for p in &self.pages {
                prop_assert!(seen.insert(p.pfn), "two pages at {:?}", p.pfn);
                prop_assert_eq!(m.page_refcount(p.pfn), Ok(1 + p.maps.len() as u32 + p.pins));
                prop_assert_eq!(m.page_migrating(p.pfn), Ok(false));
                let mut want: Vec<_> = p.maps.clone();
                let mut got: Vec<_> = self
                    .rmap
                    .mappings(p.pfn)
                    .iter()
                    .map(|x| (x.as_id, x.va))
                    .collect();
                want.sort_unstable();
                got.sort_unstable();
                prop_assert_eq!(want, got);
            }
            // Every entry maps an allocated page and is present; the TLB agrees.
            for (k, pte) in &self.pt.ptes {
                let Pte::Present { pfn, .. } = *pte else {
                    return Err(TestCaseError::fail(format!("{k:?} left as {pte:?}")));
                };
                prop_assert!(m.page_refcount(pfn).is_ok(), "{:?} maps freed {:?}", k, pfn);
            }
            for (k, cached) in &self.pt.tlb {
                let pte = self.pt.entry(k.0, k.1);
                prop_assert!(
                    matches!(pte, Pte::Present { pfn, .. } if pfn == *cached),
                    "stale TLB entry {:?} -> {:?}, entry {:?}",
                    k,
                    cached,
                    pte
                );
            }
            prop_assert_eq!(self.rmap.nr_mappings() as usize, self.pt.ptes.len());
        }
        // Contents survive, read through every mapping.
        for idx in 0..self.pages.len() {
            let p = self.pages[idx].clone();
            for &(a, va) in &p.maps {
                prop_assert_eq!(self.pt.read(a, va), p.tag);
            }
            prop_assert_eq!(self.pt.mem.get(&p.pfn.0).copied(), Some(p.tag));
        }
        Ok(())
    }
}

fn run_ops(ops: &[Op]) -> Result<[u64; 4], TestCaseError> {
    let (mm, rmap, pt) = setup();
    let mut w = World {
        mm,
        rmap,
        pt,
        pages: Vec::new(),
        next_va: 0x10_0000,
        next_tag: 0,
        seen: [0; 4],
    };
    for &op in ops {
        w.step(op)?;
    }
    Ok(w.seen)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn prop_map_pin_migrate_sequences(ops in proptest::collection::vec(op(), 1..120)) {
        run_ops(&ops)?;
    }
}

/// The random sequences do reach every outcome: pages move, pins stop them, a pin racing
/// with the unmap wins, emptied ranges go offline.
#[test]
fn sequences_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let mut seen = [0u64; 4];
    for _ in 0..16 {
        let ops = proptest::collection::vec(op(), 120)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let s = run_ops(&ops).unwrap();
        for (a, b) in seen.iter_mut().zip(s) {
            *a += b;
        }
    }
    assert!(seen.iter().all(|&n| n > 0), "outcomes seen: {seen:?}");
}
