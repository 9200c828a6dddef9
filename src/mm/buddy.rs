//! The buddy allocator: per node, per zone, per migrate type free lists of blocks of
//! `2^order` pages (`order <= MAX_ORDER`), with all state in the page descriptors.
//!
//! Model: a free block is named by its head page, which carries `BUDDY` and the order and
//! is linked (by pfn, doubly) into `zone.lists[order][migrate type of its pageblock]`, so
//! any free block is removed in O(1). Freeing merges a block with its buddy (`pfn ^ 2^order`)
//! while the buddy is a free head of the same order, node and zone. Node and zone are
//! stored in each descriptor and a free block sits on the lists of its head's (node, zone).
//! A block and its buddy are always in one section, hence one zone, but not always on one
//! node: a node boundary may fall at any page inside a section, so the node test is what
//! keeps a free block on one node. [`Buddy::free_range`] likewise cuts a range at node
//! changes before freeing it in aligned blocks.
//!
//! Pageblock rules: a block of order <= `PAGEBLOCK_ORDER` lies inside one pageblock. A
//! merge across a pageblock boundary (order 9 -> 10) happens only when both pageblocks
//! have the same type and neither is `Isolate`; so every page of a free block has the
//! migrate type of the list the block is on. Isolating a pageblock splits an order-10
//! block spanning it and moves the pageblock's free blocks to the `Isolate` list, which
//! is never allocated from; frees into an isolated pageblock land there too. Freeing an
//! allocation larger than a pageblock whose pageblocks now differ in type (one was
//! isolated meanwhile) frees it one pageblock at a time.
//!
//! Pageblocks spanning two nodes: the migrate type belongs to the pageblock, so both
//! nodes' pages in it share it; isolating the pageblock moves each free block to the
//! `Isolate` list of its own node and zone. Nothing is counted twice or lost: every count
//! goes by the node of the page.
//!
//! Allocation policy: nodes in order (preferred first, then ascending); per node, movable
//! requests try the Movable zone then Normal, unmovable ones Normal only. In a zone a
//! request takes the smallest block of its own migrate type (Movable for movable,
//! Unmovable otherwise), falling back to the other non-isolate type, and splits it.
//! Normal gives a request pages only above the watermark of its class (kernel: none;
//! workloads and migration destinations: the kernel reserve plus the floor; see
//! [`super::reserve`]); the Movable zone has no watermark. [`Buddy::take_page_in`] serves a
//! request for one page at a place (a test of particular memory): it finds the free block
//! holding a page of the range and splits it around that page.
//!
//! Counts: per zone, free pages per migrate type; `present_pages` (RAM pages online in the
//! zone) and `managed_pages` (present minus boot reservations and mem_maps).
//!
//! Locks: part of `Mm`, under the kernel's `Mm` lock. The fast path does not log.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use super::page::{MigrateType, PageFlags, ZoneType};
use super::section::SectionTable;
use super::types::{
    NodeId, Pfn, PfnRange, MAX_NODES, MAX_ORDER, NR_ORDERS, PAGEBLOCK_ORDER, PAGES_PER_PAGEBLOCK,
};
use super::{AllocError, AllocFlags, Error};

/// One free list: head pfn and number of blocks.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct FreeList {
    pub(crate) head: Option<Pfn>,
    pub(crate) len: u64,
}

/// One zone of one node.
#[derive(Clone, Default, Debug)]
pub(crate) struct Zone {
    pub(crate) lists: [[FreeList; MigrateType::COUNT]; NR_ORDERS],
    /// Free pages per migrate type.
    pub(crate) nr_free: [u64; MigrateType::COUNT],
    pub(crate) present_pages: u64,
    pub(crate) managed_pages: u64,
}

impl Zone {
    pub(crate) fn free_pages(&self) -> u64 {
        self.nr_free.iter().sum()
    }
}

/// Per-node state.
#[derive(Clone, Default, Debug)]
pub(crate) struct Node {
    pub(crate) zones: [Zone; ZoneType::COUNT],
    /// The node has (or had) memory, or was named by `add_sections`.
    pub(crate) seen: bool,
    /// Pages present but not online.
    pub(crate) offline_pages: u64,
    /// Pages of this node holding mem_maps and section-table chunks.
    pub(crate) mem_map_pages: u64,
    /// Pages of this node reserved at boot (DT reservations, kernel, DTB), not mem_maps.
    pub(crate) reserved_pages: u64,
}

/// (node index, zone index) of a zone.
type ZoneIdx = (usize, usize);

/// Section table plus zones: everything the allocator touches.
pub(crate) struct Buddy {
    pub(crate) table: SectionTable,
    pub(crate) nodes: Vec<Node>,
    /// The floor in pages (see [`super::reserve`]); 0 until the kernel sets it.
    pub(crate) floor_pages: u64,
    /// Asked before every allocation, metadata included: `true` fails it (fault
    /// injection, see [`super::Mm::set_alloc_fault`]).
    pub(crate) fault: Option<fn(AllocFlags) -> bool>,
}

impl Buddy {
    pub(crate) fn new(table: SectionTable) -> Buddy {
        let mut nodes = Vec::with_capacity(MAX_NODES);
        nodes.resize_with(MAX_NODES, Node::default);
        Buddy {
            table,
            nodes,
            floor_pages: 0,
            fault: None,
        }
    }

    /// The nodes that have (or had) memory, in id order, each with its id.
    pub(crate) fn seen_nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.seen)
            .map(|(i, n)| (NodeId::new(i as u32).unwrap_or(NodeId::ZERO), n))
    }

    fn zone_of(&self, pfn: Pfn) -> ZoneIdx {
        let p = self.table.pg(pfn);
        (p.node().index(), p.zone().index())
    }

    /// Puts the block `pfn`/`order` at the front of list `mt` of zone `zi`.
    fn list_push(&mut self, zi: ZoneIdx, pfn: Pfn, order: u32, mt: MigrateType) {
        let head = self.nodes[zi.0].zones[zi.1].lists[order as usize][mt.index()].head;
        if let Some(old) = head {
            self.table.pg_mut(old).set_prev(Some(pfn));
        }
        let p = self.table.pg_mut(pfn);
        p.insert_flags(PageFlags::BUDDY);
        p.set_order(order);
        p.set_next(head);
        p.set_prev(None);
        let z = &mut self.nodes[zi.0].zones[zi.1];
        let l = &mut z.lists[order as usize][mt.index()];
        l.head = Some(pfn);
        l.len += 1;
        z.nr_free[mt.index()] += 1 << order;
    }

    /// Takes the free block `pfn`/`order` off list `mt` of zone `zi` in O(1); clears
    /// `BUDDY`, keeps the order.
    fn list_remove(&mut self, zi: ZoneIdx, pfn: Pfn, order: u32, mt: MigrateType) {
        let p = self.table.pg_mut(pfn);
        let (prev, next) = (p.prev(), p.next());
        p.remove_flags(PageFlags::BUDDY);
        p.set_next(None);
        p.set_prev(None);
        if let Some(n) = next {
            self.table.pg_mut(n).set_prev(prev);
        }
        let z = &mut self.nodes[zi.0].zones[zi.1];
        match prev {
            Some(pr) => self.table.pg_mut(pr).set_next(next),
            None => z.lists[order as usize][mt.index()].head = next,
        }
        z.lists[order as usize][mt.index()].len -= 1;
        z.nr_free[mt.index()] -= 1 << order;
    }

    /// Whether every pageblock of the block `pfn`/`order` has one type, not `Isolate`.
    fn uniform_pageblocks(&self, pfn: Pfn, order: u32) -> bool {
        let mt = self.table.migrate_type(pfn);
        let mut pb = pfn.add(PAGES_PER_PAGEBLOCK);
        while pb.0 < pfn.0 + (1 << order) {
            if self.table.migrate_type(pb) != mt {
                return false;
            }
            pb = pb.add(PAGES_PER_PAGEBLOCK);
        }
        mt != MigrateType::Isolate
    }

    /// Frees the block `pfn`/`order` (descriptors already online, one node, not on a
    /// list), merging with free buddies as the pageblock and node rules allow.
    pub(crate) fn free_core(&mut self, mut pfn: Pfn, mut order: u32) {
        if order > PAGEBLOCK_ORDER && !self.uniform_pageblocks(pfn, order) {
            let end = pfn.0 + (1 << order);
            while pfn.0 < end {
                self.free_core(pfn, PAGEBLOCK_ORDER);
                pfn = pfn.add(PAGES_PER_PAGEBLOCK);
            }
            return;
        }
        let zi = self.zone_of(pfn);
        // Below a pageblock the block and its buddy share one pageblock, hence one type.
        let mt = self.table.migrate_type(pfn);
        while order < MAX_ORDER {
            let buddy = Pfn(pfn.0 ^ (1 << order));
            if order >= PAGEBLOCK_ORDER
                && (mt == MigrateType::Isolate || self.table.migrate_type(buddy) != mt)
            {
                break;
            }
            let bp = self.table.pg(buddy);
            // Never merge across a node (or zone) boundary.
            if !bp.is_buddy() || bp.order() != order || (bp.node().index(), bp.zone().index()) != zi
            {
                break;
            }
            self.list_remove(zi, buddy, order, mt);
            pfn = Pfn(pfn.0.min(buddy.0));
            order += 1;
        }
        self.list_push(zi, pfn, order, mt);
    }

    /// Frees every page of `range` (prepared: online, zone and node set, no state flags):
    /// cut into runs of one node, each freed in the largest aligned blocks.
    pub(crate) fn free_range(&mut self, range: PfnRange) {
        let mut start = range.start;
        while start.0 < range.end_exclusive.0 {
            let node = self.table.pg(start).node();
            let rest = PfnRange::new(start, range.end_exclusive);
            let end = self
                .table
                .find_page(rest, |p| p.node() != node)
                .unwrap_or(range.end_exclusive);
            let mut pfn = start;
            while pfn.0 < end.0 {
                let mut order = MAX_ORDER;
                while !pfn.is_aligned(1 << order) || pfn.0 + (1 << order) > end.0 {
                    order -= 1;
                }
                self.free_core(pfn, order);
                pfn = pfn.add(1 << order);
            }
            start = end;
        }
    }

    /// Takes the smallest suitable block of at least `order` from one zone.
    fn alloc_from_zone(
        &mut self,
        node: NodeId,
        zone: ZoneType,
        order: u32,
        want: MigrateType,
    ) -> Option<Pfn> {
        let other = match want {
            MigrateType::Movable => MigrateType::Unmovable,
            _ => MigrateType::Movable,
        };
        for mt in [want, other] {
            let z = &self.nodes[node.index()].zones[zone.index()];
            if z.nr_free[mt.index()] < (1 << order) {
                continue;
            }
            let Some((pfn, mut o)) = (order..=MAX_ORDER)
                .find_map(|o| z.lists[o as usize][mt.index()].head.map(|h| (h, o)))
            else {
                continue;
            };
            let zi = (node.index(), zone.index());
            self.list_remove(zi, pfn, o, mt);
            while o > order {
                o -= 1;
                let half = pfn.add(1 << o);
                let half_mt = if o >= PAGEBLOCK_ORDER {
                    self.table.migrate_type(half)
                } else {
                    mt
                };
                self.list_push(zi, half, o, half_mt);
            }
            let p = self.table.pg_mut(pfn);
            p.set_order(order);
            p.set_refcount(1);
            return Some(pfn);
        }
        None
    }

    /// Allocates `2^order` pages following the policy in the module doc.
    pub(crate) fn alloc(&mut self, order: u32, flags: AllocFlags) -> Result<Pfn, AllocError> {
        if order > MAX_ORDER {
            return Err(AllocError::BadOrder);
        }
        if self.fault.is_some_and(|fail| fail(flags)) {
            return Err(AllocError::NoMemory);
        }
        let first = flags.node.unwrap_or(NodeId::ZERO);
        let want = if flags.movable {
            MigrateType::Movable
        } else {
            MigrateType::Unmovable
        };
        let zones: &[ZoneType] = if flags.movable {
            &[ZoneType::Movable, ZoneType::Normal]
        } else {
            &[ZoneType::Normal]
        };
        let others = (0..MAX_NODES as u32)
            .filter_map(NodeId::new)
            .filter(|n| *n != first);
        // Whether Normal may give this request its pages: decided once, on the first Normal
        // zone reached (the watermark compares all nodes' Normal memory together).
        let mut normal_ok: Option<bool> = None;
        for node in core::iter::once(first).chain(others) {
            if !self.nodes[node.index()].seen {
                continue;
            }
            for &zone in zones {
                if zone == ZoneType::Normal {
                    let ok = match normal_ok {
                        Some(ok) => ok,
                        None => *normal_ok.insert(self.normal_allows(order, flags.class)),
                    };
                    if !ok {
                        continue;
                    }
                }
                if let Some(pfn) = self.alloc_from_zone(node, zone, order, want) {
                    return Ok(pfn);
                }
            }
        }
        Err(AllocError::NoMemory)
    }

    /// Takes one free page inside `range` off the lists, as an order-0 allocation
    /// (refcount 1), or `None` when `range` has none. Only online pages of pageblocks
    /// that are not isolated count; a unit's own descriptor pages are never free, so they
    /// are never taken. `zone_ok` decides whether pages of a zone may be given. The page
    /// may lie inside a larger free block whose head is before `range`: that block is
    /// split around it, the rest stays free. The walk reads each page's descriptor once
    /// per order, so callers keep `range` small (a pageblock) to bound the hold.
    pub(crate) fn take_page_in(
        &mut self,
        range: PfnRange,
        zone_ok: impl Fn(ZoneType) -> bool,
    ) -> Option<Pfn> {
        let mut pfn = range.start;
        while pfn.0 < range.end_exclusive.0 {
            if self.table.pfn_online(pfn) {
                if let Some((head, order)) = self.free_block_of(pfn) {
                    let mt = self.table.migrate_type(head);
                    if mt != MigrateType::Isolate && zone_ok(self.table.pg(head).zone()) {
                        self.carve(head, order, mt, pfn);
                        return Some(pfn);
                    }
                }
            }
            pfn = pfn.add(1);
        }
        None
    }

    /// The free block (head, order) that contains `pfn`, if `pfn` is free.
    fn free_block_of(&self, pfn: Pfn) -> Option<(Pfn, u32)> {
        (0..=MAX_ORDER).find_map(|o| {
            let head = Pfn(pfn.0 & !((1u64 << o) - 1));
            if !self.table.pfn_online(head) {
                return None;
            }
            let p = self.table.pg(head);
            (p.is_buddy() && p.order() == o).then_some((head, o))
        })
    }

    /// Takes the free block `head`/`order` (on list `mt`) off its list, gives back every
    /// half that does not hold `pfn`, and makes `pfn` an order-0 allocation.
    fn carve(&mut self, head: Pfn, order: u32, mt: MigrateType, pfn: Pfn) {
        let zi = self.zone_of(head);
        self.list_remove(zi, head, order, mt);
        let (mut start, mut o) = (head, order);
        while o > 0 {
            o -= 1;
            let upper = start.add(1 << o);
            let (keep, give) = if pfn.0 >= upper.0 {
                (upper, start)
            } else {
                (start, upper)
            };
            let give_mt = if o >= PAGEBLOCK_ORDER {
                self.table.migrate_type(give)
            } else {
                mt
            };
            self.list_push(zi, give, o, give_mt);
            start = keep;
        }
        let p = self.table.pg_mut(pfn);
        p.set_order(0);
        p.set_refcount(1);
    }

    /// Frees an allocation made by [`Buddy::alloc`].
    pub(crate) fn free(&mut self, pfn: Pfn, order: u32) -> Result<(), Error> {
        if order > MAX_ORDER || !pfn.is_aligned(1 << order) || !self.table.pfn_online(pfn) {
            return Err(Error::BadFree(pfn));
        }
        let bad = PageFlags::BUDDY
            | PageFlags::RESERVED
            | PageFlags::OFFLINE
            | PageFlags::HOLE
            | PageFlags::MEMMAP
            | PageFlags::PENDING
            | PageFlags::MIGRATING;
        let p = self.table.pg_mut(pfn);
        if p.flags().intersects(bad) || p.refcount() != 1 || p.order() != order {
            return Err(Error::BadFree(pfn));
        }
        p.set_refcount(0);
        p.set_owner(0);
        self.free_core(pfn, order);
        Ok(())
    }

    /// Makes the pageblock starting at `pb` (online) `Isolate`, splitting a max-order free
    /// block that spans it and moving its free blocks to the `Isolate` list.
    pub(crate) fn isolate_pageblock(&mut self, pb: Pfn) {
        let old = self.table.migrate_type(pb);
        if old == MigrateType::Isolate {
            return;
        }
        self.set_pageblock_type(pb, MigrateType::Isolate);
        if MAX_ORDER > PAGEBLOCK_ORDER {
            let head = Pfn(pb.0 & !((1 << MAX_ORDER) - 1));
            let p = self.table.pg(head);
            if p.is_buddy() && p.order() == MAX_ORDER {
                let zi = self.zone_of(head);
                self.list_remove(zi, head, MAX_ORDER, old);
                let mut half = head;
                while half.0 < head.0 + (1 << MAX_ORDER) {
                    let mt = self.table.migrate_type(half);
                    self.list_push(zi, half, PAGEBLOCK_ORDER, mt);
                    half = half.add(PAGES_PER_PAGEBLOCK);
                }
                return;
            }
        }
        let end = pb.add(PAGES_PER_PAGEBLOCK);
        let mut from = pb;
        while let Some((pfn, order)) = self.next_head(from, end, PageFlags::BUDDY) {
            // Each block on the lists of its own node: a pageblock may span two.
            let zi = self.zone_of(pfn);
            self.list_remove(zi, pfn, order, old);
            self.list_push(zi, pfn, order, MigrateType::Isolate);
            from = pfn.add(1 << order);
        }
    }

    /// Gives the isolated pageblock at `pb` type `mt` and re-frees its free blocks so they
    /// merge with their neighbours again.
    pub(crate) fn unisolate_pageblock(&mut self, pb: Pfn, mt: MigrateType) {
        if self.table.migrate_type(pb) != MigrateType::Isolate {
            return;
        }
        let end = pb.add(PAGES_PER_PAGEBLOCK);
        let mut from = pb;
        while let Some((pfn, order)) = self.next_head(from, end, PageFlags::BUDDY) {
            let zi = self.zone_of(pfn);
            self.list_remove(zi, pfn, order, MigrateType::Isolate);
            self.table.pg_mut(pfn).insert_flags(PageFlags::PENDING);
            from = pfn.add(1 << order);
        }
        self.set_pageblock_type(pb, mt);
        let mut from = pb;
        while let Some((pfn, order)) = self.next_head(from, end, PageFlags::PENDING) {
            self.table.pg_mut(pfn).remove_flags(PageFlags::PENDING);
            self.free_core(pfn, order);
            from = pfn.add(1 << order);
        }
    }

    /// The first page in `[from, end)` whose flags contain `mark` (a free head, or one marked
    /// `PENDING`), with its order: the pages in between are walked one by one.
    fn next_head(&self, from: Pfn, end: Pfn, mark: PageFlags) -> Option<(Pfn, u32)> {
        let mut pfn = from;
        while pfn.0 < end.0 {
            let p = self.table.pg(pfn);
            if p.flags().contains(mark) {
                return Some((pfn, p.order()));
            }
            pfn = pfn.add(1);
        }
        None
    }

    /// The first page of the isolated pageblock at `pb` that is not free, if any.
    pub(crate) fn pageblock_first_busy(&self, pb: Pfn) -> Option<Pfn> {
        let end = pb.add(PAGES_PER_PAGEBLOCK);
        let mut pfn = self.after_unit_meta(pb);
        while pfn.0 < end.0 {
            let p = self.table.pg(pfn);
            if !p.is_buddy() {
                return Some(pfn);
            }
            pfn = pfn.add(1 << p.order());
        }
        None
    }

    /// The first page of the pageblock at `pb` after its unit's own descriptors (which
    /// leave with the pageblock, so they do not make it busy), or `pb` when it has none.
    fn after_unit_meta(&self, pb: Pfn) -> Pfn {
        if self.table.is_unit_meta(pb) {
            pb.add(super::memmap::UNIT_META_PAGES)
        } else {
            pb
        }
    }

    /// Takes every free block of the (isolated, all free) pageblock at `pb` off its list.
    pub(crate) fn pageblock_take_free(&mut self, pb: Pfn) {
        let end = pb.add(PAGES_PER_PAGEBLOCK);
        let mut pfn = self.after_unit_meta(pb);
        while pfn.0 < end.0 {
            let order = self.table.pg(pfn).order();
            let zi = self.zone_of(pfn);
            let mt = self.table.migrate_type(pfn);
            self.list_remove(zi, pfn, order, mt);
            pfn = pfn.add(1 << order);
        }
    }

    pub(crate) fn set_pageblock_type(&mut self, pb: Pfn, mt: MigrateType) {
        if let Some(s) = self.table.get_mut(pb.section()) {
            s.set_migrate_type(pb.subsection_in_section(), mt);
        }
    }
}
