//! The run-time section calls: a whole hotplug lifecycle, isolation of max-order blocks,
//! errors that leave the state unchanged, and running out of memory for metadata.

use super::*;

#[test]
fn hotplug_lifecycle() {
    let mut mm = holes_layout();
    let start = fingerprint(&mm);
    let n0 = NodeId::ZERO;
    // 2 MiB + 130 MiB starting 2 MiB into the section at 70 GiB: two partial sections,
    // in a part of the address space that has no table chunk yet.
    let r = prange(70 * GIB + 2 * MIB, 132 * MIB);
    mm.add_sections(r, n0).unwrap();
    ok(&mm);
    let secs: Vec<_> = mm
        .sections()
        .filter(|s| s.start.0 >= 70 * GIB && s.start.0 < 80 * GIB)
        .collect();
    assert_eq!(secs.len(), 2);
    assert_eq!(
        (secs[0].subsections_present, secs[1].subsections_present),
        (63, 3)
    );
    assert!(secs
        .iter()
        .all(|s| s.state == SectionState::Offline && s.zone.is_none() && !s.boot));
    assert_eq!(mm.node_stats().next().unwrap().offline_pages, r.nr_pages());
    assert_eq!(mm.add_sections(r, n0), Err(Error::AlreadyPresent(r.start)));
    // Another node's memory may join a section (one node per call).
    let other = prange(70 * GIB + 134 * MIB, 2 * MIB);
    mm.add_sections(other, NodeId::new(1).unwrap()).unwrap();
    ok(&mm);
    assert_eq!(mm.node_stats().nth(1).unwrap().offline_pages, 512);
    assert_eq!(
        mm.sections().find(|s| s.nr == SectionNr(561)).unwrap().node,
        n0
    );
    mm.remove_sections(other).unwrap();

    mm.online_range(prange(70 * GIB + 2 * MIB, 4 * MIB), ZoneType::Movable)
        .unwrap();
    assert_eq!(
        mm.sections()
            .find(|s| s.nr == SectionNr(560))
            .unwrap()
            .state,
        SectionState::Partial
    );
    mm.online_range(prange(70 * GIB + 6 * MIB, 128 * MIB), ZoneType::Movable)
        .unwrap();
    ok(&mm);
    let mv = zone(&mm, 0, ZoneType::Movable);
    assert_eq!(
        (mv.present_pages, mv.managed_pages, mv.free_pages),
        (r.nr_pages(), r.nr_pages(), r.nr_pages())
    );
    assert_eq!(
        mm.online_range(r, ZoneType::Movable),
        Err(Error::AlreadyOnline(r.start))
    );

    // Movable allocations land in Movable; unmovable ones never do.
    let m = mm.alloc_pages(5, AllocFlags::MOVABLE).unwrap();
    assert!(r.contains(m));
    for _ in 0..64 {
        let u = mm.alloc_pages(4, AllocFlags::UNMOVABLE).unwrap();
        assert!(!r.contains(u));
        mm.free_pages(u, 4).unwrap();
    }
    mm.isolate_range(r).unwrap();
    ok(&mm);
    assert_eq!(
        zone(&mm, 0, ZoneType::Movable).free_pages_by_type[MigrateType::Isolate.index()],
        r.nr_pages() - 32
    );
    assert_eq!(mm.isolate_range(r), Err(Error::AlreadyIsolated(r.start)));
    assert!(matches!(mm.offline_range(r), Err(Error::Busy(p)) if p == m));
    // Nothing allocatable while isolated: movable requests fall back to Normal.
    let other = mm.alloc_pages(0, AllocFlags::MOVABLE).unwrap();
    assert!(!r.contains(other));
    mm.free_pages(other, 0).unwrap();
    mm.free_pages(m, 5).unwrap();
    ok(&mm);
    assert_eq!(mm.remove_sections(r), Err(Error::AlreadyOnline(r.start)));
    mm.offline_range(r).unwrap();
    ok(&mm);
    assert_eq!(mm.isolate_range(r), Err(Error::NotOnline(r.start)));
    mm.remove_sections(r).unwrap();
    ok(&mm);
    // boot: 2 chunks + 4 mem_maps; the new chunk for 64..128 GiB and both mem_maps are gone.
    assert_eq!(mm.store.maps - mm.store.releases, 2 + 4);
    assert_eq!(mm.store.releases, 3);
    assert_eq!(mm.remove_sections(r), Err(Error::NotPresent(r.start)));
    let end = fingerprint(&mm);
    assert_eq!(end.zones, start.zones);
    assert_eq!(end.nodes, start.nodes);
    assert_eq!(end.sections, start.sections);
    // Re-adding makes the chunk again.
    mm.add_sections(r, n0).unwrap();
    assert_eq!(mm.store.maps - mm.store.releases, 2 + 4 + 1 + 2);
    ok(&mm);
}

#[test]
fn isolation_splits_and_rejoins_max_order_blocks() {
    let mut mm = boot_mm(&[region(GIB, 128 * MIB, 0)], &[]);
    // mem_map (1 MiB) and chunk sit at the top; the low blocks are order 10.
    let start = fingerprint(&mm);
    let pb = prange(GIB + 2 * MIB, 2 * MIB);
    assert!(mm.pfn_to_page(Pfn::down(PhysAddr(GIB))).unwrap().is_buddy());
    mm.isolate_range(pb).unwrap();
    ok(&mm);
    let z = zone(&mm, 0, ZoneType::Normal);
    assert_eq!(z.free_pages_by_type[MigrateType::Isolate.index()], 512);
    // The other half of the split block stays allocatable.
    let lower = mm.alloc_pages(9, AllocFlags::UNMOVABLE).unwrap();
    assert_eq!(lower, Pfn::down(PhysAddr(GIB)));
    mm.free_pages(lower, 9).unwrap();
    // A free landing in an isolated pageblock stays isolated.
    mm.unisolate_range(pb).unwrap();
    ok(&mm);
    assert_eq!(fingerprint(&mm), start);
    let x = mm.alloc_pages(0, AllocFlags::UNMOVABLE).unwrap();
    let xb = PfnRange::new(Pfn(x.0 & !511), Pfn((x.0 & !511) + 512));
    mm.isolate_range(xb).unwrap();
    mm.free_pages(x, 0).unwrap();
    ok(&mm);
    assert_eq!(
        zone(&mm, 0, ZoneType::Normal).free_pages_by_type[MigrateType::Isolate.index()],
        mm.free_pages_in(xb)
    );
    assert_eq!(
        mm.unisolate_range(prange(GIB, 2 * MIB)),
        Err(Error::NotIsolated(Pfn::down(PhysAddr(GIB))))
    );
    mm.unisolate_range(xb).unwrap();
    ok(&mm);
    assert_eq!(fingerprint(&mm), start);
}

#[test]
fn runtime_errors_leave_state_unchanged() {
    let mut mm = holes_layout();
    let before = fingerprint(&mm);
    let n0 = NodeId::ZERO;
    assert_eq!(
        mm.add_sections(PfnRange::new(Pfn(5), Pfn(5)), n0),
        Err(Error::InvalidRange)
    );
    assert_eq!(
        mm.add_sections(prange(4 * GIB + MIB, 2 * MIB), n0),
        Err(Error::Unaligned)
    );
    assert_eq!(
        mm.add_sections(prange(1 << 40, 2 * MIB), n0),
        Err(Error::BeyondPhysLimit)
    );
    assert_eq!(
        mm.online_range(prange(4 * GIB, 2 * MIB), ZoneType::Movable),
        Err(Error::NotPresent(Pfn::down(PhysAddr(4 * GIB))))
    );
    assert_eq!(
        mm.online_range(prange(GIB, 2 * MIB), ZoneType::Movable),
        Err(Error::AlreadyOnline(Pfn::down(PhysAddr(GIB))))
    );
    assert_eq!(
        mm.offline_range(prange(GIB, 2 * MIB)),
        Err(Error::NotIsolated(Pfn::down(PhysAddr(GIB))))
    );
    assert_eq!(
        mm.unisolate_range(prange(GIB, 2 * MIB)),
        Err(Error::NotIsolated(Pfn::down(PhysAddr(GIB))))
    );
    assert_eq!(
        mm.remove_sections(prange(GIB, 2 * MIB)),
        Err(Error::AlreadyOnline(Pfn::down(PhysAddr(GIB))))
    );
    // Boot memory holding the kernel image cannot go offline.
    mm.isolate_range(prange(GIB + 2 * MIB, 2 * MIB)).unwrap();
    assert_eq!(
        mm.offline_range(prange(GIB + 2 * MIB, 2 * MIB)),
        Err(Error::Busy(Pfn::down(PhysAddr(GIB + 2 * MIB))))
    );
    mm.unisolate_range(prange(GIB + 2 * MIB, 2 * MIB)).unwrap();
    // A section can't mix zones: a Movable subsection next to Normal boot memory.
    mm.add_sections(
        prange(512 * GIB + 202 * MIB, 2 * MIB),
        NodeId::new(1).unwrap(),
    )
    .unwrap();
    assert_eq!(
        mm.online_range(prange(512 * GIB + 202 * MIB, 2 * MIB), ZoneType::Movable),
        Err(Error::ZoneConflict(SectionNr(512 * 8 + 1)))
    );
    mm.remove_sections(prange(512 * GIB + 202 * MIB, 2 * MIB))
        .unwrap();
    ok(&mm);
    assert_eq!(fingerprint(&mm), before);
}

#[test]
fn add_sections_fails_cleanly_without_memory() {
    // 128 MiB of boot memory; use nearly all of it, then try to add 1 GiB.
    let mut mm = boot_mm(&[region(GIB, 128 * MIB, 0)], &[]);
    let mut hold = Vec::new();
    while let Ok(p) = mm.alloc_pages(0, AllocFlags::UNMOVABLE) {
        hold.push(p);
        if zone(&mm, 0, ZoneType::Normal).free_pages < 700 {
            break;
        }
    }
    let before = fingerprint(&mm);
    let maps = mm.store.maps - mm.store.releases;
    // The chunk for 4 GiB fits, the first mem_map maybe not: either way, a clean error.
    let r = prange(4 * GIB, GIB);
    assert_eq!(mm.add_sections(r, NodeId::ZERO), Err(Error::NoMemory));
    ok(&mm);
    let after = fingerprint(&mm);
    assert_eq!(after.sections, before.sections);
    assert!(mm.store.maps - mm.store.releases <= maps + 1);
    for p in hold {
        mm.free_pages(p, 0).unwrap();
    }
    ok(&mm);
}

#[test]
fn free_of_a_large_block_across_an_isolated_pageblock() {
    // An order-10 allocation spans two pageblocks; one gets isolated before the free.
    let mut mm = boot_mm(&[region(GIB, 128 * MIB, 0)], &[]);
    let start = fingerprint(&mm);
    let p = mm.alloc_pages(10, AllocFlags::UNMOVABLE).unwrap();
    let upper = PfnRange::new(p.add(512), p.add(1024));
    mm.isolate_range(upper).unwrap();
    mm.free_pages(p, 10).unwrap();
    ok(&mm);
    let z = zone(&mm, 0, ZoneType::Normal);
    assert_eq!(z.free_pages_by_type[MigrateType::Isolate.index()], 512);
    mm.unisolate_range(upper).unwrap();
    ok(&mm);
    assert_eq!(fingerprint(&mm), start);
}
