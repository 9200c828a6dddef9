//! Boot from the device tree's view of memory (counts, sections, bad layouts, ragged
//! edges), page lookup, and allocation and free across zones and nodes.

use super::*;

#[test]
fn boot_counts_and_sections() {
    let mm = holes_layout();
    ok(&mm);
    let n0 = zone(&mm, 0, ZoneType::Normal);
    let n1 = zone(&mm, 1, ZoneType::Normal);
    assert_eq!(n0.present_pages, 256 * MIB / 4096);
    assert_eq!(n1.present_pages, 200 * MIB / 4096);
    // node 0: two sections' mem_maps (1 MiB each) + one 32 KiB table chunk, reservations
    // rounded out to pages: 3 MiB + 1 page and 16 pages.
    let meta0 = (2 * MEM_MAP_BYTES + section::CHUNK_BYTES) / 4096;
    let resv0 = (3 * MIB) / 4096 + 1 + 16;
    assert_eq!(n0.managed_pages, n0.present_pages - meta0 - resv0);
    assert_eq!(n0.free_pages, n0.managed_pages);
    let meta1 = (2 * MEM_MAP_BYTES + section::CHUNK_BYTES) / 4096;
    assert_eq!(n1.managed_pages, n1.present_pages - meta1);
    assert_eq!(zone(&mm, 0, ZoneType::Movable).present_pages, 0);
    let secs: Vec<_> = mm.sections().collect();
    assert_eq!(secs.len(), 4);
    assert_eq!(secs[0].start, PhysAddr(GIB));
    assert_eq!(secs[0].subsections_present, 64);
    assert_eq!(secs[2].nr, SectionNr(512 * 8));
    assert_eq!(secs[2].subsections_present, 63);
    assert_eq!(secs[3].subsections_present, 100 - 63);
    assert!(secs
        .iter()
        .all(|s| s.state == SectionState::Online && s.boot && s.zone == Some(ZoneType::Normal)));
    assert_eq!(secs[3].node, NodeId::new(1).unwrap());
    assert_eq!(MEM_MAP_BYTES_PER_PAGE, 32);
    let nodes: Vec<_> = mm.node_stats().collect();
    assert_eq!(nodes[0].mem_map_pages, meta0);
    assert_eq!(nodes[0].reserved_pages, resv0);
    // Sparse table: memory at 1 GiB and at 512 GiB costs two chunks, nothing between.
    assert_eq!(mm.buddy.table.chunks().count(), 2);
    assert_eq!(mm.store.maps, 2 + 4);
}

#[test]
fn boot_rejects_bad_layouts() {
    let st = FakeStore::default;
    assert_eq!(
        Mm::boot(&[region(GIB, GIB, 0)], &[], 29, st()).unwrap_err(),
        Error::BadPaBits(29)
    );
    assert_eq!(
        Mm::boot(&[region(GIB, GIB, 0)], &[], 30, st()).unwrap_err(),
        Error::BeyondPhysLimit
    );
    assert_eq!(
        Mm::boot(
            &[region(GIB, GIB, 0), region(GIB + MIB, MIB, 0)],
            &[],
            40,
            st()
        )
        .unwrap_err(),
        Error::Overlap
    );
    assert_eq!(
        Mm::boot(&[region(GIB, 100, 0)], &[], 40, st()).unwrap_err(),
        Error::NoBootMemory
    );
    assert_eq!(
        Mm::boot(&[region(u64::MAX - 5, 100, 0)], &[], 40, st()).unwrap_err(),
        Error::InvalidRange
    );
    // Too little memory for even one mem_map.
    assert_eq!(
        Mm::boot(&[region(GIB, 512 * 1024, 0)], &[], 40, st()).unwrap_err(),
        Error::NoMemory
    );
}

#[test]
fn boot_with_ragged_edges_and_48_bit_pa() {
    // Region edges off page and subsection boundaries; 48-bit address space.
    let regions = [
        region(GIB + 4096 + 17, 10 * MIB, 0),
        region(3 * GIB - 3 * MIB, 64 * MIB + 5, 0),
    ];
    let mm = Mm::boot(&regions, &[resv(GIB, 4 * MIB)], 48, FakeStore::default()).unwrap();
    ok(&mm);
    assert!(!mm.pfn_valid(Pfn::down(PhysAddr(GIB + 12 * MIB))));
    assert!(mm.pfn_valid(Pfn::down(PhysAddr(GIB)))); // subsection present, page is a hole
    assert_eq!(
        mm.pfn_to_page(Pfn::down(PhysAddr(GIB))).unwrap().flags(),
        PageFlags::HOLE
    );
    let secs: Vec<_> = mm.sections().collect();
    assert_eq!(secs.len(), 3); // GiB section, the one ending at 3 GiB, the next one
}

#[test]
fn pfn_valid_and_page_lookup() {
    let mm = holes_layout();
    let base = 512 * GIB;
    assert!(!mm.pfn_valid(Pfn::down(PhysAddr(base))));
    assert!(!mm.pfn_valid(Pfn::down(PhysAddr(base + 2 * MIB - 4096))));
    assert!(mm.pfn_valid(Pfn::down(PhysAddr(base + 2 * MIB))));
    assert!(mm.pfn_valid(Pfn::down(PhysAddr(base + 202 * MIB - 4096))));
    assert!(!mm.pfn_valid(Pfn::down(PhysAddr(base + 202 * MIB))));
    assert!(!mm.pfn_valid(Pfn::down(PhysAddr(100 * GIB))));
    assert!(!mm.pfn_valid(Pfn(u64::MAX >> 12)));
    for pa in [GIB, GIB + 77 * 4096, base + 150 * MIB] {
        let pfn = Pfn::down(PhysAddr(pa));
        let page = mm.pfn_to_page(pfn).unwrap();
        assert_eq!(mm.page_to_pfn(page), Some(pfn));
    }
    let foreign = Page::EMPTY;
    assert_eq!(mm.page_to_pfn(&foreign), None);
}

#[test]
fn alloc_and_free_respect_zones_and_nodes() {
    let mut mm = holes_layout();
    let start = fingerprint(&mm);
    let a = mm
        .alloc_pages(0, AllocFlags::UNMOVABLE.on_node(NodeId::new(1).unwrap()))
        .unwrap();
    assert!(a.addr().0 >= 512 * GIB);
    let b = mm.alloc_pages(10, AllocFlags::MOVABLE).unwrap();
    assert!(b.is_aligned(1024) && b.addr().0 < 2 * GIB);
    assert_eq!(
        mm.alloc_pages(11, AllocFlags::MOVABLE),
        Err(AllocError::BadOrder)
    );
    ok(&mm);
    assert_eq!(mm.free_pages(b, 9), Err(Error::BadFree(b)));
    assert_eq!(mm.free_pages(b.add(1), 0), Err(Error::BadFree(b.add(1))));
    assert_eq!(
        mm.free_pages(Pfn::down(PhysAddr(GIB + 2 * MIB)), 0),
        Err(Error::BadFree(Pfn::down(PhysAddr(GIB + 2 * MIB))))
    );
    mm.free_pages(b, 10).unwrap();
    assert_eq!(mm.free_pages(b, 10), Err(Error::BadFree(b)));
    mm.free_pages(a, 0).unwrap();
    ok(&mm);
    assert_eq!(fingerprint(&mm), start);
}

#[test]
fn exhaustion_then_everything_coalesces() {
    let mut mm = boot_mm(&[region(GIB, 128 * MIB, 0)], &[]);
    let start = fingerprint(&mm);
    let mut got = Vec::new();
    while let Ok(p) = mm.alloc_pages(3, AllocFlags::UNMOVABLE) {
        got.push(p);
    }
    assert_eq!(zone(&mm, 0, ZoneType::Normal).free_pages, 0);
    assert_eq!(
        mm.alloc_pages(0, AllocFlags::MOVABLE),
        Err(AllocError::NoMemory)
    );
    ok(&mm);
    for p in got.into_iter().rev() {
        mm.free_pages(p, 3).unwrap();
    }
    ok(&mm);
    assert_eq!(fingerprint(&mm), start);
}
