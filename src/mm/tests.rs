//! Host tests of the memory model over the shared `Vec`-backed fake store: unit tests of boot,
//! allocation and the run-time section calls, and property tests that run random
//! sequences with the invariant checker after every step.

use std::collections::HashMap;
use std::vec::Vec;

use proptest::prelude::*;

use super::heap::{HeapBacking, SlabHeap};
use super::testing::FakeStore;
use super::*;

pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const GIB: u64 = 1 << 30;

pub(crate) fn region(base: u64, size: u64, node: u32) -> MemRegion {
    MemRegion {
        base: PhysAddr(base),
        size_bytes: size,
        node: NodeId::new(node).unwrap(),
    }
}

pub(crate) fn resv(base: u64, size: u64) -> Reservation {
    Reservation {
        base: PhysAddr(base),
        size_bytes: size,
    }
}

fn prange(base: u64, size: u64) -> PfnRange {
    PfnRange::from_phys(PhysAddr(base), size).unwrap()
}

/// Memory at 1 GiB (node 0, 256 MiB with a kernel image and a DTB reserved) and a
/// partially present section at 512 GiB (node 1, 200 MiB starting 2 MiB into a section).
fn holes_layout() -> Mm<FakeStore> {
    let regions = [
        region(GIB, 256 * MIB, 0),
        region(512 * GIB + 2 * MIB, 200 * MIB, 1),
    ];
    let reservations = [
        resv(GIB + 2 * MIB, 3 * MIB + 4096),
        resv(GIB + 200 * MIB, 64 * 1024),
        resv(0, 4096),
    ];
    Mm::boot(&regions, &reservations, 40, FakeStore::default()).unwrap()
}

fn zone(mm: &Mm<FakeStore>, node: u32, z: ZoneType) -> ZoneStats {
    mm.stats()
        .find(|s| s.node.index() == node as usize && s.zone == Some(z))
        .unwrap()
}

/// Everything that must come back when all memory is returned.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    zones: Vec<ZoneStats>,
    nodes: Vec<NodeStats>,
    sections: Vec<SectionInfo>,
    lists: Vec<u64>,
}

fn fingerprint(mm: &Mm<FakeStore>) -> Fingerprint {
    let mut lists = Vec::new();
    for n in &mm.buddy.nodes {
        for z in &n.zones {
            for o in &z.lists {
                lists.extend(o.iter().map(|l| l.len));
            }
        }
    }
    Fingerprint {
        zones: mm.stats().collect(),
        nodes: mm.node_stats().collect(),
        sections: mm.sections().collect(),
        lists,
    }
}

fn ok(mm: &Mm<FakeStore>) {
    if let Err(e) = mm.check() {
        panic!("check: FAIL {e}");
    }
}

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
    assert!(!mm.pfn_valid(PhysAddr(GIB + 12 * MIB).pfn_down()));
    assert!(mm.pfn_valid(PhysAddr(GIB).pfn_down())); // subsection present, page is a hole
    assert_eq!(
        mm.pfn_to_page(PhysAddr(GIB).pfn_down()).unwrap().flags(),
        PageFlags::HOLE
    );
    let secs: Vec<_> = mm.sections().collect();
    assert_eq!(secs.len(), 3); // GiB section, the one ending at 3 GiB, the next one
}

#[test]
fn pfn_valid_and_page_lookup() {
    let mm = holes_layout();
    let base = 512 * GIB;
    assert!(!mm.pfn_valid(PhysAddr(base).pfn_down()));
    assert!(!mm.pfn_valid(PhysAddr(base + 2 * MIB - 4096).pfn_down()));
    assert!(mm.pfn_valid(PhysAddr(base + 2 * MIB).pfn_down()));
    assert!(mm.pfn_valid(PhysAddr(base + 202 * MIB - 4096).pfn_down()));
    assert!(!mm.pfn_valid(PhysAddr(base + 202 * MIB).pfn_down()));
    assert!(!mm.pfn_valid(PhysAddr(100 * GIB).pfn_down()));
    assert!(!mm.pfn_valid(Pfn(u64::MAX >> 12)));
    for pa in [GIB, GIB + 77 * 4096, base + 150 * MIB] {
        let pfn = PhysAddr(pa).pfn_down();
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
        mm.free_pages(PhysAddr(GIB + 2 * MIB).pfn_down(), 0),
        Err(Error::BadFree(PhysAddr(GIB + 2 * MIB).pfn_down()))
    );
    mm.free_pages(b, 10).unwrap();
    assert_eq!(mm.free_pages(b, 10), Err(Error::BadFree(b)));
    mm.free_pages(a, 0).unwrap();
    ok(&mm);
    assert_eq!(fingerprint(&mm), start);
}

#[test]
fn exhaustion_then_everything_coalesces() {
    let mut mm = Mm::boot(&[region(GIB, 128 * MIB, 0)], &[], 40, FakeStore::default()).unwrap();
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
    // boot: 2 chunks + 4 mem_maps; the new chunk for 64..128 GiB stays, mem_maps are gone.
    assert_eq!(mm.store.maps - mm.store.releases, 2 + 4 + 1);
    assert_eq!(mm.store.releases, 2);
    assert_eq!(mm.remove_sections(r), Err(Error::NotPresent(r.start)));
    let mut end = fingerprint(&mm);
    let chunk_pages = section::CHUNK_BYTES / 4096;
    let z = &mut end.zones[0];
    assert_eq!(z.managed_pages + chunk_pages, start.zones[0].managed_pages);
    z.managed_pages += chunk_pages;
    z.free_pages += chunk_pages;
    z.free_pages_by_type[MigrateType::Unmovable.index()] += chunk_pages;
    end.nodes[0].mem_map_pages -= chunk_pages;
    assert_eq!(end.zones, start.zones);
    assert_eq!(end.nodes, start.nodes);
    assert_eq!(end.sections, start.sections);
    // Re-adding reuses the chunk.
    mm.add_sections(r, n0).unwrap();
    assert_eq!(mm.store.maps - mm.store.releases, 2 + 4 + 1 + 2);
    ok(&mm);
}

#[test]
fn isolation_splits_and_rejoins_max_order_blocks() {
    let mut mm = Mm::boot(&[region(GIB, 128 * MIB, 0)], &[], 40, FakeStore::default()).unwrap();
    // mem_map (1 MiB) and chunk sit at the top; the low blocks are order 10.
    let start = fingerprint(&mm);
    let pb = prange(GIB + 2 * MIB, 2 * MIB);
    assert!(mm.pfn_to_page(PhysAddr(GIB).pfn_down()).unwrap().is_buddy());
    mm.isolate_range(pb).unwrap();
    ok(&mm);
    let z = zone(&mm, 0, ZoneType::Normal);
    assert_eq!(z.free_pages_by_type[MigrateType::Isolate.index()], 512);
    // The other half of the split block stays allocatable.
    let lower = mm.alloc_pages(9, AllocFlags::UNMOVABLE).unwrap();
    assert_eq!(lower, PhysAddr(GIB).pfn_down());
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
        Err(Error::NotIsolated(PhysAddr(GIB).pfn_down()))
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
        Err(Error::NotPresent(PhysAddr(4 * GIB).pfn_down()))
    );
    assert_eq!(
        mm.online_range(prange(GIB, 2 * MIB), ZoneType::Movable),
        Err(Error::AlreadyOnline(PhysAddr(GIB).pfn_down()))
    );
    assert_eq!(
        mm.offline_range(prange(GIB, 2 * MIB)),
        Err(Error::NotIsolated(PhysAddr(GIB).pfn_down()))
    );
    assert_eq!(
        mm.unisolate_range(prange(GIB, 2 * MIB)),
        Err(Error::NotIsolated(PhysAddr(GIB).pfn_down()))
    );
    assert_eq!(
        mm.remove_sections(prange(GIB, 2 * MIB)),
        Err(Error::AlreadyOnline(PhysAddr(GIB).pfn_down()))
    );
    // Boot memory holding the kernel image cannot go offline.
    mm.isolate_range(prange(GIB + 2 * MIB, 2 * MIB)).unwrap();
    assert_eq!(
        mm.offline_range(prange(GIB + 2 * MIB, 2 * MIB)),
        Err(Error::Busy(PhysAddr(GIB + 2 * MIB).pfn_down()))
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
    let mut mm = Mm::boot(&[region(GIB, 128 * MIB, 0)], &[], 40, FakeStore::default()).unwrap();
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
fn two_nodes_prefer_local_memory() {
    let regions = [region(GIB, 256 * MIB, 0), region(2 * GIB, 256 * MIB, 1)];
    let mut mm = Mm::boot(&regions, &[], 40, FakeStore::default()).unwrap();
    let n1 = NodeId::new(1).unwrap();
    // mem_maps of node 1 live on node 1.
    // One table chunk covers both nodes (0..64 GiB); it came from the first node.
    assert_eq!(
        mm.node_stats().nth(1).unwrap().mem_map_pages,
        2 * MEM_MAP_BYTES / 4096
    );
    assert_eq!(
        mm.node_stats().next().unwrap().mem_map_pages,
        (2 * MEM_MAP_BYTES + section::CHUNK_BYTES) / 4096
    );
    let p = mm
        .alloc_pages(0, AllocFlags::UNMOVABLE.on_node(n1))
        .unwrap();
    assert!(p.addr().0 >= 2 * GIB);
    // Hot-added memory on node 1 gets its mem_map from node 1.
    mm.add_sections(prange(8 * GIB, 128 * MIB), n1).unwrap();
    assert_eq!(
        mm.node_stats().nth(1).unwrap().mem_map_pages,
        3 * MEM_MAP_BYTES / 4096
    );
    mm.online_range(prange(8 * GIB, 128 * MIB), ZoneType::Movable)
        .unwrap();
    let m = mm.alloc_pages(0, AllocFlags::MOVABLE.on_node(n1)).unwrap();
    assert!(m.addr().0 >= 8 * GIB);
    let m0 = mm.alloc_pages(0, AllocFlags::MOVABLE).unwrap();
    assert!(m0.addr().0 < 2 * GIB, "node 0 Normal before node 1 Movable");
    ok(&mm);
}

/// Node of every page in `range` (all must have descriptors).
fn nodes_in(mm: &Mm<FakeStore>, range: PfnRange) -> Vec<u32> {
    (range.start.0..range.end_exclusive.0)
        .map(|p| mm.pfn_to_page(Pfn(p)).unwrap().node().index() as u32)
        .collect()
}

/// Per node: present pages equal managed + mem_map + reserved (everything at boot).
fn node_pages_add_up(mm: &Mm<FakeStore>) {
    for n in mm.node_stats() {
        let present: u64 = mm
            .stats()
            .filter(|z| z.node == n.node)
            .map(|z| z.present_pages)
            .sum();
        let managed: u64 = mm
            .stats()
            .filter(|z| z.node == n.node)
            .map(|z| z.managed_pages)
            .sum();
        assert_eq!(
            present,
            managed + n.mem_map_pages + n.reserved_pages,
            "node {:?}",
            n.node
        );
    }
}

#[test]
fn qemu_two_nodes_share_a_section() {
    // QEMU -m 512M -numa node,mem=320M -numa node,mem=192M: section 10
    // (0x5000_0000..0x5800_0000) holds node 0 up to 0x5400_0000 and node 1 above.
    let regions = [
        region(0x4000_0000, 320 * MIB, 0),
        region(0x5400_0000, 192 * MIB, 1),
    ];
    let mut mm = Mm::boot(
        &regions,
        &[resv(0x4008_0000, 4 * MIB)],
        40,
        FakeStore::default(),
    )
    .unwrap();
    ok(&mm);
    let start = fingerprint(&mm);
    let (n0, n1) = (
        zone(&mm, 0, ZoneType::Normal),
        zone(&mm, 1, ZoneType::Normal),
    );
    assert_eq!(n0.present_pages, 320 * MIB / 4096);
    assert_eq!(n1.present_pages, 192 * MIB / 4096);
    assert_eq!(mm.total_stats().present_pages, 512 * MIB / 4096);
    node_pages_add_up(&mm);
    let s10 = mm.sections().find(|s| s.nr == SectionNr(10)).unwrap();
    assert_eq!((s10.node, s10.subsections_present), (NodeId::ZERO, 64));
    let s11 = mm.sections().find(|s| s.nr == SectionNr(11)).unwrap();
    assert_eq!(s11.node, NodeId::new(1).unwrap());
    // Pages carry their own node across the boundary.
    let edge = PhysAddr(0x5400_0000).pfn_down();
    assert_eq!(
        nodes_in(&mm, PfnRange::new(Pfn(edge.0 - 2), edge.add(2))),
        [0, 0, 1, 1]
    );
    // mem_maps: sections 8, 9, 10 + the chunk on node 0; section 11 on node 1.
    let nodes: Vec<_> = mm.node_stats().collect();
    assert_eq!(
        nodes[0].mem_map_pages,
        (3 * MEM_MAP_BYTES + section::CHUNK_BYTES) / 4096
    );
    assert_eq!(nodes[1].mem_map_pages, MEM_MAP_BYTES / 4096);
    // Drain node 1: every page it hands out is node 1 memory, then node 0 takes over.
    let n1_range = prange(0x5400_0000, 192 * MIB);
    let mut held = Vec::new();
    while zone(&mm, 1, ZoneType::Normal).free_pages > 0 {
        let p = mm
            .alloc_pages(0, AllocFlags::UNMOVABLE.on_node(NodeId::new(1).unwrap()))
            .unwrap();
        assert!(n1_range.contains(p), "{p:?}");
        held.push(p);
    }
    assert_eq!(held.len() as u64, n1.free_pages);
    let p = mm
        .alloc_pages(0, AllocFlags::UNMOVABLE.on_node(NodeId::new(1).unwrap()))
        .unwrap();
    assert!(!n1_range.contains(p));
    held.push(p);
    ok(&mm);
    for p in held {
        mm.free_pages(p, 0).unwrap();
    }
    ok(&mm);
    assert_eq!(fingerprint(&mm), start);
}

#[test]
fn node_boundary_inside_a_pageblock() {
    // Node 0 ends 5 pages into the pageblock at GIB + 64 MiB; node 1 goes on to 128 MiB.
    // Node 0 has more memory higher up, where its mem_maps go (top-down).
    let split = GIB + 64 * MIB + 5 * 4096;
    let regions = [
        region(GIB, split - GIB, 0),
        region(split, GIB + 128 * MIB - split, 1),
        region(GIB + 256 * MIB, 128 * MIB, 0),
    ];
    let mut mm = Mm::boot(&regions, &[], 40, FakeStore::default()).unwrap();
    ok(&mm);
    let start = fingerprint(&mm);
    assert_eq!(
        zone(&mm, 0, ZoneType::Normal).present_pages,
        64 * MIB / 4096 + 5 + 32768
    );
    assert_eq!(
        zone(&mm, 1, ZoneType::Normal).present_pages,
        64 * MIB / 4096 - 5
    );
    node_pages_add_up(&mm);
    let pb = prange(GIB + 64 * MIB, 2 * MIB);
    // The split pageblock's free pages: blocks of 4 + 1 pages on node 0, the rest node 1.
    let head = mm.pfn_to_page(pb.start).unwrap();
    assert!(head.is_buddy() && head.order() == 2 && head.node() == NodeId::ZERO);
    let fifth = mm.pfn_to_page(pb.start.add(4)).unwrap();
    assert!(fifth.is_buddy() && fifth.order() == 0 && fifth.node() == NodeId::ZERO);
    let sixth = mm.pfn_to_page(pb.start.add(5)).unwrap();
    assert!(sixth.is_buddy() && sixth.node() == NodeId::new(1).unwrap());
    // Isolation covers both nodes' pages, each on its own node's Isolate list.
    mm.isolate_range(pb).unwrap();
    ok(&mm);
    let iso = MigrateType::Isolate.index();
    assert_eq!(zone(&mm, 0, ZoneType::Normal).free_pages_by_type[iso], 5);
    assert_eq!(zone(&mm, 1, ZoneType::Normal).free_pages_by_type[iso], 507);
    // Offline and online again: counts move per page node.
    mm.offline_range(pb).unwrap();
    ok(&mm);
    let offline: Vec<_> = mm.node_stats().map(|n| n.offline_pages).collect();
    assert_eq!(offline, [5, 507]);
    assert_eq!(
        zone(&mm, 0, ZoneType::Normal).present_pages,
        64 * MIB / 4096 + 32768
    );
    mm.online_range(pb, ZoneType::Normal).unwrap();
    ok(&mm);
    assert_eq!(fingerprint(&mm), start);
    // Removing the split subsection and adding it again puts it on one node: run-time
    // calls take one node per 2 MiB subsection.
    mm.isolate_range(pb).unwrap();
    mm.offline_range(pb).unwrap();
    mm.remove_sections(pb).unwrap();
    ok(&mm);
    mm.add_sections(pb, NodeId::new(1).unwrap()).unwrap();
    mm.online_range(pb, ZoneType::Normal).unwrap();
    ok(&mm);
    assert_eq!(
        zone(&mm, 0, ZoneType::Normal).present_pages,
        64 * MIB / 4096 + 32768
    );
    assert_eq!(
        zone(&mm, 1, ZoneType::Normal).present_pages,
        64 * MIB / 4096
    );
    assert_eq!(nodes_in(&mm, pb), [1; 512]);
}

#[test]
fn hot_add_into_a_section_of_another_node() {
    let mut mm = holes_layout();
    let before = fingerprint(&mm);
    // Section 4097 holds boot memory of node 1 up to 512 GiB + 202 MiB; add node 0 above.
    let r = prange(512 * GIB + 202 * MIB, 4 * MIB);
    mm.add_sections(r, NodeId::ZERO).unwrap();
    ok(&mm);
    assert_eq!(mm.node_stats().next().unwrap().offline_pages, 1024);
    // The section is Normal already, so the new memory goes online as Normal.
    assert_eq!(
        mm.online_range(r, ZoneType::Movable),
        Err(Error::ZoneConflict(SectionNr(4097)))
    );
    mm.online_range(r, ZoneType::Normal).unwrap();
    ok(&mm);
    let n0 = zone(&mm, 0, ZoneType::Normal);
    assert_eq!(
        n0.present_pages,
        before.zones[0].present_pages + r.nr_pages()
    );
    assert_eq!(
        zone(&mm, 1, ZoneType::Normal).present_pages,
        before.zones[2].present_pages
    );
    let s = mm.sections().find(|s| s.nr == SectionNr(4097)).unwrap();
    assert_eq!(s.node, NodeId::new(1).unwrap());
    // Node 0 free memory at the boundary never merges with node 1's.
    let edge = r.start;
    let below = mm.pfn_to_page(Pfn(edge.0 - 512)).unwrap();
    assert_eq!(below.node(), NodeId::new(1).unwrap());
    let at = mm.pfn_to_page(edge).unwrap();
    assert!(at.is_buddy() && at.order() <= 9 && at.node() == NodeId::ZERO);
    mm.isolate_range(r).unwrap();
    mm.offline_range(r).unwrap();
    mm.remove_sections(r).unwrap();
    ok(&mm);
    assert_eq!(fingerprint(&mm), before);
}

#[test]
fn free_of_a_large_block_across_an_isolated_pageblock() {
    // An order-10 allocation spans two pageblocks; one gets isolated before the free.
    let mut mm = Mm::boot(&[region(GIB, 128 * MIB, 0)], &[], 40, FakeStore::default()).unwrap();
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

/// Page memory for heap tests: pages from an `Mm`, words in a map.
struct MmBacking {
    mm: Mm<FakeStore>,
    words: HashMap<usize, usize>,
}

impl HeapBacking for MmBacking {
    fn alloc_pages(&mut self, order: u32) -> Option<usize> {
        self.mm
            .alloc_pages(order, AllocFlags::UNMOVABLE)
            .ok()
            .map(|p| p.addr().0 as usize)
    }
    fn free_pages(&mut self, addr: usize, order: u32) {
        self.mm
            .free_pages(PhysAddr(addr as u64).pfn_down(), order)
            .unwrap();
    }
    fn read_word(&self, addr: usize) -> usize {
        assert!(self.mm.pfn_valid(PhysAddr(addr as u64).pfn_down()));
        self.words.get(&addr).copied().unwrap_or(0xdead_beef)
    }
    fn write_word(&mut self, addr: usize, value: usize) {
        self.words.insert(addr, value);
    }
}

#[test]
fn heap_classes_alignment_and_return_of_pages() {
    let mm = Mm::boot(&[region(GIB, 128 * MIB, 0)], &[], 40, FakeStore::default()).unwrap();
    let start = fingerprint(&mm);
    let mut b = MmBacking {
        mm,
        words: HashMap::new(),
    };
    let mut h = SlabHeap::new();
    let mut live = Vec::new();
    for (i, &(size, align)) in [
        (1, 1),
        (8, 8),
        (24, 8),
        (100, 64),
        (2048, 8),
        (3000, 8),
        (5000, 4096),
        (64, 4096),
        (1 << 20, 8),
    ]
    .iter()
    .cycle()
    .take(300)
    .enumerate()
    {
        let a = h.alloc(&mut b, size, align).unwrap();
        assert_eq!(a % align, 0, "{size}/{align}");
        live.push((a, size, align, i));
    }
    assert!(h.alloc(&mut b, (1 << 22) + 1, 8).is_none());
    let big = h.alloc(&mut b, 1 << 22, 8).unwrap();
    assert_eq!(big % (1 << 22), 0);
    h.dealloc(&mut b, big, 1 << 22, 8);
    // No two live objects overlap.
    let mut spans: Vec<_> = live
        .iter()
        .map(|&(a, s, al, _)| (a, a + s.max(al.min(s.max(1)))))
        .collect();
    spans.sort();
    assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0));
    for (a, s, al, _) in live.drain(..).rev() {
        h.dealloc(&mut b, a, s, al);
    }
    assert_eq!(h.stats().bytes_in_use, 0);
    h.trim(&mut b);
    assert_eq!(h.stats().pages_held, 0);
    ok(&b.mm);
    assert_eq!(fingerprint(&b.mm), start);
}

// ---------------------------------------------------------------------------------------
// Property tests.

#[derive(Clone, Debug)]
enum AllocOp {
    Alloc {
        order: u32,
        movable: bool,
        node: u32,
    },
    Free(usize),
}

fn alloc_op() -> impl Strategy<Value = AllocOp> {
    prop_oneof![
        3 => (prop_oneof![4 => 0..=3u32, 1 => 4..=10u32], any::<bool>(), 0..2u32)
            .prop_map(|(order, movable, node)| AllocOp::Alloc { order, movable, node }),
        2 => any::<usize>().prop_map(AllocOp::Free),
    ]
}

/// A node boundary `split` bytes into a region: on a 2 MiB boundary or at an odd page
/// (never on a pageblock boundary), strictly inside `lo..hi` MiB.
fn node_split(lo: u64, hi: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        (lo / 2 + 1..hi / 2).prop_map(|s| s * 2 * MIB),
        (lo * 256 + 1..hi * 256).prop_map(|p| if p % 512 == 0 { p + 1 } else { p } * 4096),
    ]
}

/// Two nodes with holes, the first region split between node 0 (below `split` bytes)
/// and node 1 (a node boundary inside section 8 or 9, maybe inside a pageblock), plus
/// hot-added Movable memory on node 0.
fn mixed_layout(split: u64) -> Mm<FakeStore> {
    let regions = [
        region(GIB, split, 0),
        region(GIB + split, 160 * MIB - split, 1),
        region(512 * GIB + 6 * MIB, 60 * MIB, 1),
    ];
    let mut mm = Mm::boot(
        &regions,
        &[resv(GIB + 8 * MIB, 2 * MIB)],
        40,
        FakeStore::default(),
    )
    .unwrap();
    let r = prange(6 * GIB + 64 * MIB, 96 * MIB);
    mm.add_sections(r, NodeId::ZERO).unwrap();
    mm.online_range(r, ZoneType::Movable).unwrap();
    mm
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn prop_alloc_free_coalesces(
        split in node_split(0, 160),
        ops in proptest::collection::vec(alloc_op(), 1..120),
    ) {
        let mut mm = mixed_layout(split);
        let node1 = PfnRange::new(PhysAddr(GIB + split).pfn_down(), PhysAddr(GIB + 160 * MIB).pfn_down());
        prop_assert_eq!(zone(&mm, 0, ZoneType::Normal).present_pages, split / 4096);
        prop_assert_eq!(zone(&mm, 1, ZoneType::Normal).present_pages, node1.nr_pages() + 60 * MIB / 4096);
        let start = fingerprint(&mm);
        let movable = prange(6 * GIB + 64 * MIB, 96 * MIB);
        let mut held: Vec<(Pfn, u32)> = Vec::new();
        for (step, op) in ops.iter().enumerate() {
            match *op {
                AllocOp::Alloc { order, movable: mv, node } => {
                    let flags = AllocFlags { movable: mv, node: NodeId::new(node) };
                    if let Ok(p) = mm.alloc_pages(order, flags) {
                        prop_assert!(mv || !movable.contains(p), "unmovable in Movable");
                        prop_assert!(p.is_aligned(1 << order));
                        // A block never spans two nodes.
                        let n = mm.pfn_to_page(p).unwrap().node();
                        prop_assert!((1..1u64 << order).all(|i| mm.pfn_to_page(p.add(i)).unwrap().node() == n));
                        prop_assert_eq!(n.index() == 1, node1.contains(p) || p.addr().0 >= 512 * GIB);
                        prop_assert!(held.iter().all(|&(q, o)| p.0 + (1 << order) <= q.0 || q.0 + (1 << o) <= p.0));
                        held.push((p, order));
                    }
                }
                AllocOp::Free(i) if !held.is_empty() => {
                    let (p, o) = held.swap_remove(i % held.len());
                    mm.free_pages(p, o).unwrap();
                }
                AllocOp::Free(_) => {}
            }
            if step % 4 == 0 {
                if let Err(e) = mm.check() { prop_assert!(false, "step {step} {op:?}: {e}"); }
            }
        }
        for (p, o) in held.drain(..) {
            mm.free_pages(p, o).unwrap();
        }
        if let Err(e) = mm.check() { prop_assert!(false, "end: {e}"); }
        prop_assert_eq!(fingerprint(&mm), start);
    }
}

#[derive(Clone, Copy, Debug)]
enum HpOp {
    /// Add on node 0 (`false`) or node 1 (`true`).
    Add(HpRange, bool),
    /// `add_online_range` into Movable on node 0 / 1 (counted with `Add`).
    AddOnline(HpRange, bool),
    Online(HpRange, bool),
    Isolate(HpRange),
    Unisolate(HpRange),
    Offline(HpRange),
    Remove(HpRange),
    Alloc(u32, bool),
    Free(usize),
    /// Isolate, then offline (`0`: un-isolate if that fails, `2`: stay isolated) or
    /// un-isolate (`1`); expanded into those calls before running.
    IsolateThen(HpRange, u8),
}

/// A range of `n` subsections starting at subsection `s` of window `w`.
#[derive(Clone, Copy, Debug)]
struct HpRange {
    w: usize,
    s: u64,
    n: u64,
}

/// Windows for run-time calls: (base, subsections). Window 0 is empty address space at
/// 4 GiB (three sections); window 1 covers the two sections at 512 GiB, where boot
/// memory fills subsections 16..48 of the first (a partially present boot section),
/// node 0 below a split point and node 1 above it (see [`hp_boot`]).
const WINDOWS: [(u64, u64); 2] = [(4 * GIB, 192), (512 * GIB, 128)];
const BOOT_SUBS: core::ops::Range<u64> = 16..48;

impl HpRange {
    fn pfns(self) -> PfnRange {
        prange(WINDOWS[self.w].0 + self.s * 2 * MIB, self.n * 2 * MIB)
    }
}

/// Ranges on a grid of a few sizes so that later calls hit earlier ranges often; sizes
/// 3 and 96 straddle section boundaries.
fn hp_range() -> impl Strategy<Value = HpRange> {
    let size = prop_oneof![2 => Just(1u64), 2 => Just(3u64), 3 => Just(16u64), 3 => Just(64u64), 1 => Just(96u64)];
    (
        prop_oneof![3 => Just(0usize), 2 => Just(1usize)],
        size,
        0..192u64,
    )
        .prop_map(|(w, n, i)| {
            let subs = WINDOWS[w].1;
            let s = (i % (subs / n)) * n + u64::from(n == 3);
            HpRange {
                w,
                s: s.min(subs - n),
                n,
            }
        })
}

fn hp_op() -> impl Strategy<Value = HpOp> {
    prop_oneof![
        3 => (hp_range(), prop::bool::weighted(0.3)).prop_map(|(r, n)| HpOp::Add(r, n)),
        2 => (hp_range(), prop::bool::weighted(0.3)).prop_map(|(r, n)| HpOp::AddOnline(r, n)),
        3 => (hp_range(), prop::bool::weighted(0.8)).prop_map(|(r, m)| HpOp::Online(r, m)),
        2 => hp_range().prop_map(HpOp::Isolate),
        1 => hp_range().prop_map(HpOp::Unisolate),
        2 => hp_range().prop_map(HpOp::Offline),
        2 => hp_range().prop_map(HpOp::Remove),
        3 => (0..=10u32, any::<bool>()).prop_map(|(o, m)| HpOp::Alloc(o, m)),
        2 => any::<usize>().prop_map(HpOp::Free),
        4 => (hp_range(), 0..3u8).prop_map(|(r, k)| HpOp::IsolateThen(r, k)),
    ]
}

fn expand(ops: &[HpOp]) -> Vec<HpOp> {
    let mut out = Vec::new();
    for &op in ops {
        match op {
            HpOp::IsolateThen(r, 0) => {
                out.extend([HpOp::Isolate(r), HpOp::Offline(r), HpOp::Unisolate(r)])
            }
            HpOp::IsolateThen(r, 1) => out.extend([HpOp::Isolate(r), HpOp::Unisolate(r)]),
            HpOp::IsolateThen(r, _) => out.extend([HpOp::Isolate(r), HpOp::Offline(r)]),
            op => out.push(op),
        }
    }
    out
}

/// Boot memory at 1 GiB (node 0) and in window 1: node 0 from 32 MiB to `split` bytes,
/// node 1 from there to 96 MiB (`split` strictly inside, at 2 MiB or an odd page).
fn hp_boot(split: u64) -> Mm<FakeStore> {
    let regions = [
        region(GIB, 128 * MIB, 0),
        region(512 * GIB + 32 * MIB, split - 32 * MIB, 0),
        region(512 * GIB + split, 96 * MIB - split, 1),
    ];
    Mm::boot(&regions, &[resv(GIB, 2 * MIB)], 40, FakeStore::default()).unwrap()
}

/// Runs `ops` with the checker after every step and checks that a failed call changes
/// nothing; then returns everything and checks that the start state comes back.
/// Returns how often each kind of call succeeded.
///
/// A subsection that `split` cuts in two can't be rebuilt once removed (run-time calls
/// give a whole subsection one node), so `Remove` ranges covering it are skipped.
fn run_hotplug(split: u64, ops: &[HpOp]) -> Result<[u32; 8], TestCaseError> {
    let mut mm = hp_boot(split);
    let start = fingerprint(&mm);
    let split_pfn = PhysAddr(WINDOWS[1].0 + split).pfn_down();
    let split_sub = (!split_pfn.is_aligned(PAGES_PER_SUBSECTION)).then_some(split_pfn);
    // Node of boot subsection `s` of window 1 (whole subsections only).
    let boot_node = |s: u64| NodeId::new(u32::from(s * 2 * MIB >= split)).unwrap();
    let mut done = [0u32; 8];
    let mut held: Vec<(Pfn, u32)> = Vec::new();
    for (step, &op) in expand(ops).iter().enumerate() {
        let before = fingerprint(&mm);
        let (kind, res) = match op {
            HpOp::IsolateThen(..) => unreachable!("expanded"),
            HpOp::Add(r, n) => (
                0,
                mm.add_sections(r.pfns(), NodeId::new(u32::from(n)).unwrap()),
            ),
            HpOp::AddOnline(r, n) => (
                0,
                mm.add_online_range(
                    r.pfns(),
                    NodeId::new(u32::from(n)).unwrap(),
                    ZoneType::Movable,
                ),
            ),
            HpOp::Online(r, m) => (
                1,
                mm.online_range(
                    r.pfns(),
                    if m {
                        ZoneType::Movable
                    } else {
                        ZoneType::Normal
                    },
                ),
            ),
            HpOp::Isolate(r) => (2, mm.isolate_range(r.pfns())),
            HpOp::Unisolate(r) => (3, mm.unisolate_range(r.pfns())),
            HpOp::Offline(r) => (4, mm.offline_range(r.pfns())),
            HpOp::Remove(r) if split_sub.is_some_and(|p| r.pfns().contains(p)) => {
                (5, Err(Error::InvalidRange))
            }
            HpOp::Remove(r) => (5, mm.remove_sections(r.pfns())),
            HpOp::Alloc(o, m) => match mm.alloc_pages(
                o,
                AllocFlags {
                    movable: m,
                    node: None,
                },
            ) {
                Ok(p) => {
                    let sec = mm.sections().find(|s| s.nr == p.section()).unwrap();
                    prop_assert!(
                        m || sec.zone != Some(ZoneType::Movable),
                        "unmovable in Movable"
                    );
                    for i in 0..(1u64 << o) {
                        let mt = mm.buddy.table.migrate_type(p.add(i));
                        prop_assert!(
                            mt != MigrateType::Isolate,
                            "allocated from an isolated pageblock"
                        );
                    }
                    held.push((p, o));
                    (6, Ok(()))
                }
                Err(_) => (6, Err(Error::NoMemory)),
            },
            HpOp::Free(i) if !held.is_empty() => {
                let (p, o) = held.swap_remove(i % held.len());
                (7, mm.free_pages(p, o))
            }
            HpOp::Free(_) => (7, Err(Error::InvalidRange)),
        };
        if let Err(e) = mm.check() {
            prop_assert!(false, "step {step} {op:?} -> {res:?}: check: FAIL {e}");
        }
        match res {
            Ok(()) => done[kind] += 1,
            Err(e) => {
                let after = fingerprint(&mm);
                // add_sections may keep a table chunk it allocated; compare the rest.
                if matches!(op, HpOp::Add(..) | HpOp::AddOnline(..)) && e == Error::NoMemory {
                    prop_assert_eq!(after.sections, before.sections);
                } else {
                    prop_assert_eq!(
                        after,
                        before,
                        "step {} {:?} failed with {} but changed state",
                        step,
                        op,
                        e
                    );
                }
            }
        }
    }
    // Return everything, then rebuild the boot memory of window 1 as it was.
    for (p, o) in held.drain(..) {
        mm.free_pages(p, o).unwrap();
    }
    let boot_sub = |w: usize, s: u64| w == 1 && BOOT_SUBS.contains(&s);
    let sub = |w: usize, s: u64| HpRange { w, s, n: 1 }.pfns();
    // A boot subsection removed and added again on the other node must go again.
    let wrong_node = |mm: &Mm<FakeStore>, w: usize, s: u64| {
        let r = sub(w, s);
        boot_sub(w, s)
            && !split_sub.is_some_and(|p| r.contains(p))
            && mm.pfn_valid(r.start)
            && mm.pfn_to_page(r.start).unwrap().node() != boot_node(s)
    };
    // Memory holding a mem_map can only go once that mem_map's section is gone, so
    // repeat until nothing more can be taken away.
    loop {
        let mut progress = false;
        for (w, &(_, subs)) in WINDOWS.iter().enumerate() {
            for s in 0..subs {
                let r = sub(w, s);
                if mm.buddy.table.pfn_online(r.start) {
                    let _ = mm.unisolate_range(r);
                    let zone = mm
                        .sections()
                        .find(|i| i.nr == r.start.section())
                        .unwrap()
                        .zone;
                    if !boot_sub(w, s) || zone == Some(ZoneType::Movable) || wrong_node(&mm, w, s) {
                        mm.isolate_range(r).unwrap();
                        if mm.offline_range(r).is_ok() {
                            progress = true;
                        } else {
                            mm.unisolate_range(r).unwrap();
                        }
                    }
                }
                if (!boot_sub(w, s) || wrong_node(&mm, w, s))
                    && mm.pfn_valid(r.start)
                    && !mm.buddy.table.pfn_online(r.start)
                    && mm.remove_sections(r).is_ok()
                {
                    progress = true;
                }
            }
        }
        if !progress {
            break;
        }
    }
    for (w, &(_, subs)) in WINDOWS.iter().enumerate() {
        for s in 0..subs {
            let r = sub(w, s);
            if boot_sub(w, s) {
                if !mm.pfn_valid(r.start) {
                    mm.add_sections(r, boot_node(s)).unwrap();
                }
                if !mm.buddy.table.pfn_online(r.start) {
                    mm.online_range(r, ZoneType::Normal).unwrap();
                }
            } else if mm.pfn_valid(r.start) {
                mm.remove_sections(r).unwrap();
            }
        }
    }
    if let Err(e) = mm.check() {
        prop_assert!(false, "end: check: FAIL {e}");
    }
    let mut end = fingerprint(&mm);
    // A table chunk for window 0 may have been allocated (on node 0 or 1); it stays.
    let chunk = section::CHUNK_BYTES / 4096;
    if let Some(i) =
        (0..end.nodes.len()).find(|&i| end.nodes[i].mem_map_pages != start.nodes[i].mem_map_pages)
    {
        let z = &mut end.zones[2 * i];
        end.nodes[i].mem_map_pages -= chunk;
        z.managed_pages += chunk;
        z.free_pages += chunk;
        z.free_pages_by_type[MigrateType::Unmovable.index()] += chunk;
        end.lists.clear();
        let mut start = start;
        start.lists.clear();
        prop_assert_eq!(end, start);
    } else {
        prop_assert_eq!(end, start);
    }
    Ok(done)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_shrink_iters: 300, ..ProptestConfig::default() })]

    #[test]
    fn prop_hotplug_sequences(
        split in node_split(34, 94),
        ops in proptest::collection::vec(hp_op(), 1..80),
    ) {
        run_hotplug(split, &ops)?;
    }
}

/// The property test is only as good as the calls that succeed: with a fixed seed, every
/// kind of call must succeed many times.
#[test]
fn hotplug_sequences_reach_every_state() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let mut total = [0u32; 8];
    for i in 0..20 {
        // Node boundary on a 2 MiB boundary or at an odd page inside a pageblock.
        let split = if i % 2 == 0 {
            64 * MIB
        } else {
            70 * MIB + 13 * 4096
        };
        let ops = proptest::collection::vec(hp_op(), 80)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let done = run_hotplug(split, &ops).unwrap();
        for (t, d) in total.iter_mut().zip(done) {
            *t += d;
        }
    }
    eprintln!("successes (add online isolate unisolate offline remove alloc free): {total:?}");
    assert!(
        total.iter().all(|&t| t >= 10),
        "successes per call kind: {total:?}"
    );
}
