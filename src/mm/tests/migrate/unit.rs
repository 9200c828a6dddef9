//! Unit tests of references, pins, the reverse map and the migration engine: each outcome
//! a batch can have, the races it must win or lose, and bad input.

use super::*;

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
    let reserved = Pfn::down(PhysAddr(GIB));
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
    // The profile counts each step once per batch, over the pages it handled.
    use crate::mm::migrate::Step;
    for (step, &(calls, _, pages)) in Step::ALL.iter().zip(&r.profile.steps) {
        let holds = 40u64.div_ceil(crate::mm::migrate::HOLD_PAGES as u64);
        let want_calls = match step {
            Step::Scan => batches + 1,
            Step::Alloc | Step::Unmap | Step::Remap | Step::Rmap => holds,
            Step::Flush | Step::Freeze | Step::Copy => batches,
        };
        assert_eq!((calls, pages), (want_calls, 40), "profile of {step:?}");
    }
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
            assert_eq!(shared, present(pfn, false));
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
    assert_eq!(pt.entry(1, 0x2000), present(pinned, true));
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
    let boot = PfnRange::new(Pfn::down(PhysAddr(GIB)), Pfn::down(PhysAddr(GIB + 2 * MIB)));
    mm.borrow_mut().isolate_range(boot).unwrap();
    let r = run(&mm, &mut rmap, &mut pt, boot);
    assert_eq!(r.unmovable_pages, mm.borrow().used_pages_in(boot));
    assert!(r.unmovable_pages >= 512 && r.moved_pages == 0);
}

/// A batch with mixed outcomes: over three holds of the rmap lock, a page pinned beforehand,
/// a pin that arrives during the batch's flush, and a page whose reverse map disagrees with
/// the page tables; every other page of the batch still moves, the failed ones stay
/// mapped where they were, and nothing leaks.
#[test]
fn batches_with_mixed_outcomes_move_the_rest() {
    let (mm, mut rmap, mut pt) = setup();
    // Three holds of the rmap lock in one batch (a batch is larger than a pageblock).
    let hold = crate::mm::migrate::HOLD_PAGES;
    let n = hold as u64 * 2 + 6;
    let mut pages = Vec::new();
    for i in 0..n {
        let va = 0x40_0000 + i * PAGE_SIZE;
        let pfn = map_new_page(&mm, &mut rmap, &mut pt, 1, va, 5000 + i);
        pages.push((pfn, va));
    }
    pages.sort_unstable(); // batches go in pfn order
    let range = pageblock_of(pages[0].0);
    assert!(pages.iter().all(|(p, _)| range.contains(*p)));
    // In hold 1: a pin during the flush. In hold 2: a pin from before, and a mapping the
    // page tables lost (a stale reverse-map entry).
    let (racing, pinned, stale) = (pages[5].0, pages[hold + 3].0, pages[hold + 9]);
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
    let pfn = map_new_page(&mm, &mut rmap, &mut pt, 1, 0x1000, 42);
    let range = pageblock_of(pfn);
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
    let pfn = map_new_page(&mm, &mut rmap, &mut pt, 1, 0x1000, 7);
    map(&mm, &mut rmap, &mut pt, pfn, 2, 0x8000, false);
    let range = pageblock_of(pfn);
    mm.borrow_mut().isolate_range(range).unwrap();
    let free = mm.borrow().total_stats().free_pages;
    pt.pin_on_flush = Some(pfn);
    let r = run(&mm, &mut rmap, &mut pt, range);
    assert_eq!((r.moved_pages, r.pinned_pages), (0, 1));
    assert_eq!(pt.entry(1, 0x1000), present(pfn, true));
    assert_eq!(pt.entry(2, 0x8000), present(pfn, false));
    assert_eq!((pt.copies, pt.wakes), (0, 1));
    assert_eq!(mm.borrow().total_stats().free_pages, free);
    assert_eq!(mm.borrow().page_migrating(pfn), Ok(false));
    assert_eq!(mm.borrow().page_refcount(pfn), Ok(4));
    checked(&mm, &rmap);
}

/// The flush and the copies run outside both locks; meanwhile a task touching a page of
/// the batch faults on its migration entry, waits, and after the wake-up reaches the new
/// page with its contents; an unmap of another page of the batch takes the (free) rmap
/// lock, finds the migration entry, waits too, and after the wake-up unmaps the new page.
/// Nothing leaks and every invariant holds.
#[test]
fn fault_and_unmap_during_the_unlocked_copy_wait_for_the_new_page() {
    let (mm, rmap, mut pt) = setup();
    let rmap = Rc::new(RefCell::new(rmap));
    let held = Rc::new(Cell::new(false));
    pt.rmap_held = Some(held.clone());
    pt.rmap = Some(rmap.clone());
    let mut pages = Vec::new();
    for i in 0..3u64 {
        let va = 0x80_0000 + i * PAGE_SIZE;
        let pfn = map_new_page(&mm, &mut rmap.borrow_mut(), &mut pt, 1, va, 7000 + i);
        pages.push((pfn, va));
    }
    let range = pageblock_of(pages[0].0);
    assert!(pages.iter().all(|(p, _)| range.contains(*p)));
    mm.borrow_mut().isolate_range(range).unwrap();
    let at = |va| Mapping { as_id: 1, va };
    let (faulting, unmapping) = (pages[0].1, pages[1].1);
    pt.touch_on_copy = vec![at(faulting)];
    pt.unmap_on_copy = vec![at(unmapping)];
    let mut lock = WatchedRmap {
        rmap: rmap.clone(),
        held,
    };
    let r = migrate_range(&mut Locked(mm.clone()), &mut lock, &mut pt, range).unwrap();
    assert_eq!((r.moved_pages, pt.copies, pt.flushes), (3, 3, 2));
    // The faulting task slept through the copy and retried against the new page.
    assert_eq!(pt.woken.len(), 1);
    let (m, reached) = pt.woken[0];
    assert_eq!(m, at(faulting));
    assert!(!range.contains(reached) && reached != pages[0].0);
    assert_eq!(pt.read(1, faulting), 7000);
    // The unmap that waited took down the new page's mapping, with its rmap entry.
    assert_eq!(pt.unmapped.len(), 1);
    let (m, gone) = pt.unmapped[0];
    assert_eq!(m, at(unmapping));
    assert!(!range.contains(gone));
    assert_eq!(rmap.borrow().map_count(gone), 0);
    assert_eq!(pt.entry(1, unmapping), Pte::None);
    // The unmapper drops the allocation's reference: the page is free again.
    assert_eq!(mm.borrow_mut().put_page(gone), Ok(true));
    checked(&mm, &rmap.borrow());
    assert_eq!(mm.borrow().used_pages_in(range), 0);
    mm.borrow_mut().offline_range(range).unwrap();
    checked(&mm, &rmap.borrow());
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
    assert_eq!(pt.entry(1, 0x1000), present(pfn, true));
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
    let boot = PfnRange::new(Pfn::down(PhysAddr(GIB)), Pfn::down(PhysAddr(GIB + 2 * MIB)));
    assert_eq!(m.used_pages_in(boot), 512); // the reservation
                                            // Outside memory: nothing.
    let nothing = PfnRange::new(Pfn::down(PhysAddr(8 * GIB)), Pfn::down(PhysAddr(9 * GIB)));
    assert_eq!(m.used_pages_in(nothing), 0);
}
