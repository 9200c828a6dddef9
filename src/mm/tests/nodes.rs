//! NUMA: node-local allocation and metadata, node boundaries inside a section and inside a
//! pageblock, and hot-adding into a section of another node.

use super::*;

#[test]
fn two_nodes_prefer_local_memory() {
    let regions = [region(GIB, 256 * MIB, 0), region(2 * GIB, 256 * MIB, 1)];
    let mut mm = boot_mm(&regions, &[]);
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
    let mut mm = boot_mm(&regions, &[resv(0x4008_0000, 4 * MIB)]);
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
    let edge = Pfn::down(PhysAddr(0x5400_0000));
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
    let mut mm = boot_mm(&regions, &[]);
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
