//! The invariant checker, [`Mm::check`]: walks every descriptor and every free list and
//! reports the first inconsistency in words.
//!
//! What it checks:
//! - sections: `online ⊆ present`; non-Unmovable pageblock types only on online
//!   subsections; a zone exactly when something is online, and pageblock types that fit
//!   it; a run-time section has a mem_map only while something is present; each descriptor
//!   names its own section; hole descriptors carry the section's node, present ones a
//!   node that is known (`seen`) — it may differ from the section's;
//! - pages: holes outside present subsections, `OFFLINE` exactly on present-but-offline
//!   pages, online pages in the section's zone, no stray `BUDDY`/`PENDING`;
//! - free blocks: aligned, inside online memory, one migrate type, one node and one zone
//!   throughout (never spanning a node boundary), clean tails;
//! - lists: every entry is a free head whose node, zone, order and pageblock type match
//!   the list; back links agree; lengths and per-type free counts match; the number of free
//!   heads found by the page walk equals the number of list entries for each (node, zone,
//!   order, type), so every free block is on exactly one list; isolated pageblocks hold
//!   free blocks only on `Isolate` lists, which the allocator never takes from;
//! - counts: present, managed, offline, mem_map and reserved pages per node and zone, each
//!   page counted on its own node (not its section's);
//! - per-unit descriptors ([`super::memmap`]): a section has a mem_map or unit maps, a unit
//!   map exactly for each present subsection, its descriptor pages flagged `MEMMAP` and
//!   nothing else (never free, never allocated, inside no free block), counted as mem_map
//!   pages (and present while online); metadata in the buddy's pages (mem_maps, chunks,
//!   unit tables) sits in online `MEMMAP` pages.
//!
//! Cost: O(pages with a descriptor); meant for tests and the shell's `check`. It never
//! allocates from the heap, not even for its message (a fixed-size string, cut at
//! [`CHECK_REASON_BYTES`]), so it may run under the kernel's `Mm` lock.
//! Locks: `&Mm`, under the kernel's `Mm` lock.
#![forbid(unsafe_code)]

use arrayvec::ArrayString;
use core::fmt::{self, Write};

use super::memmap::UNIT_TABLE_BYTES;
use super::model::Mm;
use super::page::{MigrateType, PageFlags, ZoneType};
use super::section::{CHUNK_BYTES, MEM_MAP_BYTES};
use super::store::MemMapStore;
use super::types::*;

/// Longest message of a [`CheckError`], in bytes; longer ones are cut.
pub const CHECK_REASON_BYTES: usize = 120;

/// A broken invariant, in words.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CheckError {
    pub reason: ArrayString<CHECK_REASON_BYTES>,
}

impl CheckError {
    /// The error with `args` as its message, cut at [`CHECK_REASON_BYTES`] (on a character
    /// boundary).
    pub fn new(args: fmt::Arguments) -> CheckError {
        /// Writes what fits and drops the rest.
        struct Cut(ArrayString<CHECK_REASON_BYTES>);
        impl Write for Cut {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for c in s.chars() {
                    if self.0.try_push(c).is_err() {
                        break;
                    }
                }
                Ok(())
            }
        }
        let mut cut = Cut(ArrayString::new());
        let _ = cut.write_fmt(args);
        CheckError { reason: cut.0 }
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

macro_rules! fail {
    ($($arg:tt)*) => {
        return Err(CheckError::new(format_args!($($arg)*)))
    };
}

#[derive(Clone, Copy, Default)]
struct NodeCounts {
    present: [u64; ZoneType::COUNT],
    managed: [u64; ZoneType::COUNT],
    offline: u64,
    mem_map: u64,
    reserved: u64,
}

type HeadCounts = [[[[u32; MigrateType::COUNT]; NR_ORDERS]; ZoneType::COUNT]; MAX_NODES];

impl<S: MemMapStore> Mm<S> {
    /// Checks every invariant listed in the module doc.
    pub fn check(&self) -> Result<(), CheckError> {
        let mut heads: HeadCounts =
            [[[[0; MigrateType::COUNT]; NR_ORDERS]; ZoneType::COUNT]; MAX_NODES];
        let mut counts = [NodeCounts::default(); MAX_NODES];
        self.check_sections(&mut heads, &mut counts)?;
        self.check_lists(&heads)?;
        self.check_metadata()?;
        for (i, (node, c)) in self.buddy.nodes.iter().zip(counts.iter()).enumerate() {
            for z in ZoneType::ALL {
                let zs = &node.zones[z.index()];
                if zs.present_pages != c.present[z.index()] {
                    fail!(
                        "node {i} zone {z}: present_pages {} but {} online RAM pages",
                        zs.present_pages,
                        c.present[z.index()]
                    );
                }
                if zs.managed_pages != c.managed[z.index()] {
                    fail!(
                        "node {i} zone {z}: managed_pages {} but {} managed pages found",
                        zs.managed_pages,
                        c.managed[z.index()]
                    );
                }
                if zs.free_pages() > zs.managed_pages {
                    fail!(
                        "node {i} zone {z}: free {} > managed {}",
                        zs.free_pages(),
                        zs.managed_pages
                    );
                }
            }
            if node.offline_pages != c.offline {
                fail!(
                    "node {i}: offline_pages {} but {} offline pages found",
                    node.offline_pages,
                    c.offline
                );
            }
            if node.mem_map_pages != c.mem_map {
                fail!(
                    "node {i}: mem_map_pages {} but {} metadata pages found",
                    node.mem_map_pages,
                    c.mem_map
                );
            }
            if node.reserved_pages != c.reserved {
                fail!(
                    "node {i}: reserved_pages {} but {} reserved pages found",
                    node.reserved_pages,
                    c.reserved
                );
            }
        }
        Ok(())
    }

    fn check_sections(
        &self,
        heads: &mut HeadCounts,
        counts: &mut [NodeCounts; MAX_NODES],
    ) -> Result<(), CheckError> {
        let t = &self.buddy.table;
        for (nr, sec) in t.iter() {
            let (present, online) = (sec.present(), sec.online());
            if online & !present != 0 {
                fail!("section {nr}: online subsections {online:#x} not all present {present:#x}");
            }
            let typed = (0..64u32)
                .filter(|&i| sec.migrate_type(i) != MigrateType::Unmovable)
                .fold(0u64, |a, i| a | 1 << i);
            if typed & !online != 0 {
                fail!(
                    "section {nr}: pageblock types set on offline subsections {:#x}",
                    typed & !online
                );
            }
            if sec.zone().is_some() != (online != 0) {
                fail!(
                    "section {nr}: zone {:?} with online bitmap {online:#x}",
                    sec.zone()
                );
            }
            if !sec.is_boot() && present == 0 {
                fail!("section {nr}: run-time section keeps a mem_map with nothing present");
            }
            let zone = sec.zone().unwrap_or(ZoneType::Normal);
            for i in 0..64u32 {
                let mt = sec.migrate_type(i);
                if online & (1 << i) != 0
                    && mt != MigrateType::Isolate
                    && mt != zone.default_migrate_type()
                {
                    fail!("section {nr}: pageblock {i} is {mt} in zone {zone}");
                }
            }
            let node = sec.node();
            match sec.mem_map() {
                Some(map) if map.len() as u64 != PAGES_PER_SECTION => {
                    fail!("section {nr}: mem_map of {} pages", map.len());
                }
                Some(_) => {}
                None => {
                    // Per-unit descriptors: a unit map exactly for each present subsection.
                    for i in 0..64u32 {
                        let unit = nr.start_pfn().add(u64::from(i) * PAGES_PER_SUBSECTION);
                        if t.unit_map(unit).is_some() != (present & (1 << i) != 0) {
                            fail!(
                                "section {nr}: subsection {i} present {} but unit map {}",
                                present & (1 << i) != 0,
                                t.unit_map(unit).is_some()
                            );
                        }
                    }
                }
            }
            // Pages up to here are covered by a free block found earlier.
            let mut free_until = nr.start_pfn();
            let mut block_mt = MigrateType::Unmovable;
            let mut block_node = node;
            let pages = t
                .slices(nr, 0, PAGES_PER_SECTION as usize)
                .flat_map(|(first, s)| s.iter().enumerate().map(move |(j, p)| (first + j, p)));
            for (idx, p) in pages {
                let pfn = nr.start_pfn().add(idx as u64);
                let bit = 1u64 << pfn.subsection_in_section();
                let flags = p.flags();
                if p.section() != nr {
                    fail!(
                        "{pfn}: descriptor says section {}, is in section {nr}",
                        p.section()
                    );
                }
                if flags.contains(PageFlags::HOLE) && p.node() != node {
                    fail!(
                        "{pfn}: hole descriptor on node {}, section {nr} is on node {node}",
                        p.node()
                    );
                }
                if !flags.contains(PageFlags::HOLE) && !self.buddy.nodes[p.node().index()].seen {
                    fail!("{pfn}: page on node {} the model does not list", p.node());
                }
                if flags.contains(PageFlags::PENDING) {
                    fail!("{pfn}: stray PENDING flag");
                }
                let c = &mut counts[p.node().index()];
                if t.is_unit_meta(pfn) {
                    if flags != PageFlags::MEMMAP {
                        fail!("{pfn}: a unit's descriptor page with flags {flags:?}");
                    }
                    if pfn < free_until {
                        fail!("{pfn}: a unit's descriptor page inside a free block");
                    }
                    c.mem_map += 1;
                    if online & bit != 0 {
                        if p.zone() != zone {
                            fail!(
                                "{pfn}: descriptor page zone {} in a {zone} section",
                                p.zone()
                            );
                        }
                        c.present[zone.index()] += 1;
                    }
                    continue;
                }
                if present & bit == 0 {
                    if flags != PageFlags::HOLE {
                        fail!("{pfn}: not present but flags {flags:?}");
                    }
                    continue;
                }
                if online & bit == 0 {
                    if flags != PageFlags::OFFLINE {
                        fail!("{pfn}: present, offline, but flags {flags:?}");
                    }
                    c.offline += 1;
                    continue;
                }
                if flags.contains(PageFlags::OFFLINE) {
                    fail!("{pfn}: online page flagged OFFLINE");
                }
                if flags.contains(PageFlags::HOLE) {
                    if flags != PageFlags::HOLE {
                        fail!("{pfn}: hole with flags {flags:?}");
                    }
                    continue;
                }
                if p.zone() != zone {
                    fail!("{pfn}: page zone {} in a {zone} section", p.zone());
                }
                c.present[zone.index()] += 1;
                if flags.contains(PageFlags::MEMMAP) {
                    c.mem_map += 1;
                } else if flags.contains(PageFlags::RESERVED) {
                    c.reserved += 1;
                } else {
                    c.managed[zone.index()] += 1;
                }
                if pfn < free_until {
                    if flags != PageFlags::empty() || p.refcount() != 0 {
                        fail!(
                            "{pfn}: inside a free block but flags {flags:?} refcount {}",
                            p.refcount()
                        );
                    }
                    if t.migrate_type(pfn) != block_mt {
                        fail!("{pfn}: free block spans pageblocks of different types");
                    }
                    if p.node() != block_node {
                        fail!(
                            "{pfn}: free block of node {block_node} spans node {}",
                            p.node()
                        );
                    }
                    continue;
                }
                if flags.contains(PageFlags::BUDDY) {
                    let order = p.order();
                    if order > MAX_ORDER || !pfn.is_aligned(1 << order) {
                        fail!("{pfn}: free head of order {order} misaligned");
                    }
                    if flags != PageFlags::BUDDY || p.refcount() != 0 {
                        fail!(
                            "{pfn}: free head with flags {flags:?} refcount {}",
                            p.refcount()
                        );
                    }
                    let end = pfn.add(1 << order);
                    let mut sub = pfn;
                    while sub.0 < end.0 {
                        if online & (1 << sub.subsection_in_section()) == 0 {
                            fail!("{pfn}: free block of order {order} reaches offline {sub}");
                        }
                        sub = sub.add(PAGES_PER_SUBSECTION);
                    }
                    block_mt = t.migrate_type(pfn);
                    block_node = p.node();
                    free_until = end;
                    heads[p.node().index()][zone.index()][order as usize][block_mt.index()] += 1;
                }
            }
        }
        Ok(())
    }

    /// Every mem_map and table chunk sits in pages marked `MEMMAP`.
    fn check_metadata(&self) -> Result<(), CheckError> {
        let t = &self.buddy.table;
        let meta = t
            .iter()
            .filter_map(|(nr, s)| Some((nr, s.mem_map_base()?, MEM_MAP_BYTES)))
            .chain(t.chunks().map(|(nr, base)| (nr, base, CHUNK_BYTES)))
            .chain(
                t.unit_tables()
                    .map(|(nr, base)| (nr, base, UNIT_TABLE_BYTES)),
            );
        for (nr, base, bytes) in meta {
            let first = Pfn::down(base);
            for pfn in (first.0..first.0 + bytes / PAGE_SIZE).map(Pfn) {
                if !t.pfn_online(pfn) || !t.pg(pfn).flags().contains(PageFlags::MEMMAP) {
                    fail!("section {nr}: metadata at {pfn} not in an online MEMMAP page");
                }
            }
        }
        Ok(())
    }

    fn check_lists(&self, heads: &HeadCounts) -> Result<(), CheckError> {
        let t = &self.buddy.table;
        for (i, node) in self.buddy.nodes.iter().enumerate() {
            for z in ZoneType::ALL {
                let zone = &node.zones[z.index()];
                let mut free = [0u64; MigrateType::COUNT];
                for order in 0..=MAX_ORDER {
                    for mt in MigrateType::ALL {
                        let list = zone.lists[order as usize][mt.index()];
                        let mut prev = None;
                        let mut cur = list.head;
                        let mut n = 0u64;
                        while let Some(pfn) = cur {
                            if n >= list.len {
                                fail!("node {i} {z} order {order} {mt}: list longer than its length {} (or a cycle)", list.len);
                            }
                            if !t.pfn_online(pfn) {
                                fail!("node {i} {z} order {order} {mt}: {pfn} on the list is not online");
                            }
                            let p = t.pg(pfn);
                            if !p.is_buddy() || p.order() != order {
                                fail!("node {i} {z} order {order} {mt}: {pfn} on the list is not a free head of this order ({:?} order {})", p.flags(), p.order());
                            }
                            if p.node().index() != i || p.zone() != z {
                                fail!("node {i} {z} order {order} {mt}: {pfn} belongs to node {} zone {}", p.node(), p.zone());
                            }
                            if t.migrate_type(pfn) != mt {
                                fail!(
                                    "node {i} {z} order {order} {mt}: {pfn} is in a {} pageblock",
                                    t.migrate_type(pfn)
                                );
                            }
                            if p.prev() != prev {
                                fail!("node {i} {z} order {order} {mt}: {pfn} back link {:?}, expected {prev:?}", p.prev());
                            }
                            prev = cur;
                            cur = p.next();
                            n += 1;
                        }
                        if n != list.len {
                            fail!(
                                "node {i} {z} order {order} {mt}: {n} entries, length says {}",
                                list.len
                            );
                        }
                        let found = u64::from(heads[i][z.index()][order as usize][mt.index()]);
                        if found != n {
                            fail!("node {i} {z} order {order} {mt}: {found} free heads in mem_map, {n} on the list");
                        }
                        free[mt.index()] += n << order;
                    }
                }
                if free != zone.nr_free {
                    fail!(
                        "node {i} {z}: free counts {:?}, lists hold {free:?}",
                        zone.nr_free
                    );
                }
            }
        }
        Ok(())
    }
}
