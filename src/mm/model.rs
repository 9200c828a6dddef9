//! [`Mm`]: the memory model's one object: boot from the device tree's view of memory,
//! the page allocation API, and the read-only views the shell prints.
//!
//! Boot ([`Mm::boot`]), in order:
//! 1. regions are trimmed to whole pages, sorted and checked (no overlap, inside the
//!    physical address range); reservations are rounded out to whole pages;
//! 2. the early allocator ([`super::early`]) starts with memory minus reservations;
//! 3. the subsections touched by RAM become present (a partly covered subsection is
//!    present and its non-RAM pages are holes);
//! 4. each present section gets its section-table chunk (if new) and its 1 MiB mem_map from
//!    the node of its lowest RAM, the section's node (another node with a warning only if
//!    that one has no room);
//! 5. all boot memory is online in the Normal zone of its node; every page the early
//!    allocator did not hand out goes to the buddy allocator.
//!
//! Node boundaries inside a section: the device tree may put two nodes in one section
//! (QEMU `-m 512M -numa node,mem=320M -numa node,mem=192M` splits the section at
//! 0x5000_0000 at 0x5400_0000), at any page. Such a section has one mem_map, on its
//! section's node, and [`SectionInfo::node`] reports that node; but every RAM page's
//! descriptor carries the node of its region, and everything else goes by the page's
//! node: zone counts, free lists, allocation, buddy merging (never across nodes). A
//! pageblock (subsection) holding two nodes' pages has one migrate type shared by both;
//! isolating it isolates both nodes' pages in it, each on its own node's lists. Hole
//! pages carry the section's node.
//!
//! Counts: `present` = RAM pages online in the zone; `managed` = present minus boot
//! reservations and pages holding mem_maps / section-table chunks; `free` = in the buddy.
//! All are per the node of each page, so a node's `present` after boot is exactly its RAM.
//!
//! States: after `boot` every call is allowed at any time; there is no shutdown.
//! Locks: see [`super`]: the kernel's `Mm` lock guards all of it.
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use super::buddy::Buddy;
use super::early::EarlyAlloc;
use super::page::{MigrateType, Page, PageFlags, ZoneType};
use super::section::{Section, SectionTable, CHUNK_ORDER, MEM_MAP_ORDER};
use super::store::{MemMap, MemMapItem, MemMapStore, MetaPages};
use super::types::*;
use super::{AllocError, AllocFlags, Error};

/// One RAM range from the device tree.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MemRegion {
    pub base: PhysAddr,
    pub size_bytes: u64,
    pub node: NodeId,
}

/// One range never to be handed out (kernel image, DTB, `/memreserve/`, `/reserved-memory`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Reservation {
    pub base: PhysAddr,
    pub size_bytes: u64,
}

/// Page counts of one zone of one node.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ZoneStats {
    pub node: NodeId,
    pub zone: Option<ZoneType>,
    pub present_pages: u64,
    pub managed_pages: u64,
    pub free_pages: u64,
    /// Free pages per migrate type, indexed by [`MigrateType::index`].
    pub free_pages_by_type: [u64; MigrateType::COUNT],
}

/// Page counts of one node that belong to no zone.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct NodeStats {
    pub node: NodeId,
    /// Present but not online.
    pub offline_pages: u64,
    /// Holding mem_maps and section-table chunks.
    pub mem_map_pages: u64,
    /// Reserved at boot (DT reservations, kernel image, DTB).
    pub reserved_pages: u64,
}

/// How much of a section is online.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SectionState {
    /// Every present subsection is online.
    Online,
    /// Some present subsections are online.
    Partial,
    /// Present, nothing online.
    Offline,
}

impl fmt::Display for SectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SectionState::Online => "online",
            SectionState::Partial => "partial",
            SectionState::Offline => "offline",
        })
    }
}

/// One present section, for the shell's `sections` command.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SectionInfo {
    pub nr: SectionNr,
    pub start: PhysAddr,
    /// Exclusive.
    pub end: PhysAddr,
    /// The section's node: where its mem_map lives, the node of its lowest boot RAM (or
    /// of the `add_sections` call that created it). Pages of another node may share the
    /// section; their counts go to their own node (see the module doc).
    pub node: NodeId,
    /// `None` while nothing in it is online.
    pub zone: Option<ZoneType>,
    pub state: SectionState,
    /// Present subsections, of 64.
    pub subsections_present: u32,
    /// Online subsections, of 64.
    pub subsections_online: u32,
    /// Isolated pageblocks, of 64.
    pub pageblocks_isolated: u32,
    /// Its mem_map came from the early allocator.
    pub boot: bool,
}

/// Runs code under the kernel's `Mm` lock: how the calls that take the lock several times
/// (the migration engine, the chunked hotplug calls) reach the model, one hold per call of
/// `with_mm`. A plain `Mm` implements it (no lock); host tests wrap one to act between holds.
pub trait MmLock {
    type Store: MemMapStore;
    /// Calls `f` with the lock held.
    fn with_mm<T>(&mut self, f: impl FnOnce(&mut Mm<Self::Store>) -> T) -> T;

    /// [`MemMapStore::map_filled`] of the model's store, for metadata pages the model has
    /// allocated and nothing reaches until a later hold installs the mapping. The default
    /// takes the lock; an implementation whose store keeps no shared state (the kernel's:
    /// writes through the linear map) maps without it, which is the point: filling a
    /// section's 1 MiB mem_map is the longest step of adding memory.
    fn map_filled<T: MemMapItem + Copy>(&mut self, meta: MetaPages, value: T) -> MemMap<T> {
        self.with_mm(|m| m.store.map_filled(meta, value))
    }
}

impl<S: MemMapStore> MmLock for Mm<S> {
    type Store = S;
    fn with_mm<T>(&mut self, f: impl FnOnce(&mut Mm<S>) -> T) -> T {
        f(self)
    }
}

/// The memory model (see the module docs of [`super`]).
pub struct Mm<S: MemMapStore> {
    pub(crate) buddy: Buddy,
    pub(crate) store: S,
    pa_bits: u32,
    /// New sections keep their descriptors in their own units ([`super::memmap`]).
    pub(crate) memmap_on_memory: bool,
}

impl<S: MemMapStore> fmt::Debug for Mm<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mm")
            .field("pa_bits", &self.pa_bits)
            .finish_non_exhaustive()
    }
}

impl<S: MemMapStore> Mm<S> {
    /// Builds the model from the device tree's memory (`regions`, each on a node) minus
    /// `reservations`, for a CPU with `pa_bits`-bit physical addresses. See the module doc.
    pub fn boot(
        regions: &[MemRegion],
        reservations: &[Reservation],
        pa_bits: u32,
        mut store: S,
    ) -> Result<Mm<S>, Error> {
        if !(MIN_PA_BITS..=MAX_PA_BITS).contains(&pa_bits) {
            return Err(Error::BadPaBits(pa_bits));
        }
        let limit = 1u64 << pa_bits;
        let mut mem: Vec<(PfnRange, NodeId)> = Vec::new();
        for r in regions {
            let end = r
                .base
                .0
                .checked_add(r.size_bytes)
                .ok_or(Error::InvalidRange)?;
            if end > limit {
                return Err(Error::BeyondPhysLimit);
            }
            let range = PfnRange::new(Pfn::up(r.base), Pfn::down(PhysAddr(end)));
            if !range.is_empty() {
                mem.push((range, r.node));
            }
        }
        mem.sort_by_key(|(r, _)| r.start);
        if mem.windows(2).any(|w| w[0].0.end_exclusive > w[1].0.start) {
            return Err(Error::Overlap);
        }
        if mem.is_empty() {
            return Err(Error::NoBootMemory);
        }

        let mut early = EarlyAlloc::new(mem.clone());
        for r in reservations {
            let end = r.base.0.saturating_add(r.size_bytes).min(limit);
            early.reserve(PfnRange::new(Pfn::down(r.base), Pfn::up(PhysAddr(end))));
        }

        // Present subsections per section, and the node of each section: that of its
        // lowest RAM (`mem` is sorted). Other nodes' pages in it keep their own node.
        let mut present: BTreeMap<u64, (NodeId, u64)> = BTreeMap::new();
        for &(range, node) in &mem {
            let mut pfn = Pfn(range.start.0 & !(PAGES_PER_SUBSECTION - 1));
            while pfn.0 < range.end_exclusive.0 {
                let nr = pfn.section();
                let entry = present.entry(nr.0).or_insert((node, 0));
                entry.1 |= 1 << pfn.subsection_in_section();
                pfn = pfn.add(PAGES_PER_SUBSECTION);
            }
        }

        let mut buddy = Buddy::new(SectionTable::new(pa_bits));
        // Metadata placed by the early allocator: (range, node of the memory).
        let mut meta: Vec<PfnRange> = Vec::new();
        let mut early_alloc =
            |early: &mut EarlyAlloc, order: u32, node: NodeId| -> Result<MetaPages, Error> {
                let nr_pages = 1 << order;
                let pfn = early.alloc(nr_pages, 1, node).or_else(|| {
                    let other = mem
                        .iter()
                        .map(|(_, n)| *n)
                        .find_map(|n| early.alloc(nr_pages, 1, n));
                    if other.is_some() {
                        log::warn!("mm: node {node} full, its metadata goes to another node");
                    }
                    other
                });
                let pfn = pfn.ok_or(Error::NoMemory)?;
                meta.push(PfnRange::new(pfn, pfn.add(nr_pages)));
                Ok(MetaPages::new(pfn, order))
            };
        for (&nr, &(node, bits)) in &present {
            let nr = SectionNr(nr);
            if buddy.table.needs_chunk(nr) {
                let meta = early_alloc(&mut early, CHUNK_ORDER, node)?;
                let chunk = store.map::<Section>(meta);
                buddy.table.install_chunk(nr, chunk, true);
            }
            let meta = early_alloc(&mut early, MEM_MAP_ORDER, node)?;
            let mut map = store.map::<Page>(meta);
            for p in map.iter_mut() {
                *p = Page::init(nr, node, PageFlags::HOLE);
            }
            let sec = buddy.table.get_mut(nr).ok_or(Error::NoMemory)?;
            sec.set_mem_map(map, node, true);
            sec.set_present(bits);
            sec.set_online(bits);
            sec.set_zone(Some(ZoneType::Normal));
            buddy.nodes[node.index()].seen = true;
        }
        // RAM pages: on their region's node, reserved until the buddy gets them; counts.
        for &(range, node) in &mem {
            buddy.table.for_each_page_mut(range, |_, p| {
                p.set_flags(PageFlags::RESERVED);
                p.set_zone(ZoneType::Normal);
                p.set_node(node);
            });
            let n = &mut buddy.nodes[node.index()];
            n.seen = true;
            n.zones[ZoneType::Normal.index()].present_pages += range.nr_pages();
            n.zones[ZoneType::Normal.index()].managed_pages +=
                range.nr_pages() - early.reserved_in(range);
            let meta_pages: u64 = meta.iter().map(|m| m.intersect(range).nr_pages()).sum();
            n.mem_map_pages += meta_pages;
            n.reserved_pages += early.reserved_in(range) - meta_pages;
        }
        for m in &meta {
            buddy
                .table
                .for_each_page_mut(*m, |_, p| p.insert_flags(PageFlags::MEMMAP));
        }
        for (range, _) in early.free_ranges() {
            buddy
                .table
                .for_each_page_mut(range, |_, p| p.set_flags(PageFlags::empty()));
            buddy.free_range(range);
        }
        log::info!(
            "mm: {} sections present, mem_map {} bytes/page",
            present.len(),
            core::mem::size_of::<Page>()
        );
        Ok(Mm {
            buddy,
            store,
            pa_bits,
            memmap_on_memory: false,
        })
    }

    /// The physical address width the model covers.
    pub fn pa_bits(&self) -> u32 {
        self.pa_bits
    }

    /// Allocates `2^order` contiguous pages, naturally aligned. The head page gets
    /// refcount 1.
    pub fn alloc_pages(&mut self, order: u32, flags: AllocFlags) -> Result<Pfn, AllocError> {
        self.buddy.alloc(order, flags)
    }

    /// Allocates one free page inside `range` (an order-0 allocation, freed with
    /// `free_pages(pfn, 0)`): what a test of particular memory (`memtest sample`) needs.
    /// Movable requests may take a page of any zone, unmovable ones only Normal; a Normal
    /// page is given only above the request class's watermark, as [`Mm::alloc_pages`]
    /// does. Isolated pageblocks give nothing; the fault hook is asked first.
    pub fn alloc_page_in(&mut self, range: PfnRange, flags: AllocFlags) -> Result<Pfn, AllocError> {
        if self.buddy.fault.is_some_and(|fail| fail(flags)) {
            return Err(AllocError::NoMemory);
        }
        let normal_ok = self.buddy.normal_allows(0, flags.class);
        self.buddy
            .take_page_in(range, |z| match z {
                ZoneType::Normal => normal_ok,
                _ => flags.movable,
            })
            .ok_or(AllocError::NoMemory)
    }

    /// Installs (or with `None` removes) the model's one allocation-failure hook: the page
    /// allocator asks it before each allocation — [`Mm::alloc_pages`] and the metadata
    /// pages of hotplug (mem_maps, section-table chunks, unmovable with the section's node)
    /// alike — and when it returns `true` the allocation fails with
    /// [`AllocError::NoMemory`], exactly as if memory had run out. The kernel's fault
    /// injection installs one; host tests install [`super::faults::hook`]. The hook runs
    /// under the model's lock and must not allocate.
    pub fn set_alloc_fault(&mut self, hook: Option<fn(AllocFlags) -> bool>) {
        self.buddy.fault = hook;
    }

    /// Frees an allocation of `alloc_pages(order, _)` starting at `pfn`. Anything else
    /// (wrong order, double free, reserved page) is refused with [`Error::BadFree`].
    pub fn free_pages(&mut self, pfn: Pfn, order: u32) -> Result<(), Error> {
        self.buddy.free(pfn, order)
    }

    /// Whether `pfn` is in a present subsection.
    pub fn pfn_valid(&self, pfn: Pfn) -> bool {
        self.buddy.table.pfn_valid(pfn)
    }

    /// The descriptor of a present page, in O(1).
    pub fn pfn_to_page(&self, pfn: Pfn) -> Option<&Page> {
        if self.pfn_valid(pfn) {
            self.buddy.table.page(pfn)
        } else {
            None
        }
    }

    /// The pfn of a descriptor obtained from [`Mm::pfn_to_page`], in O(1).
    pub fn page_to_pfn(&self, page: &Page) -> Option<Pfn> {
        self.buddy.table.page_to_pfn(page)
    }

    /// Sets the owner word of the allocated head page `pfn`: opaque to the model, cleared
    /// on free, carried to the new page by migration ([`super::migrate`]).
    pub fn set_owner(&mut self, pfn: Pfn, owner: u64) -> Result<(), Error> {
        if !self.buddy.table.pfn_online(pfn) {
            return Err(Error::NotOnline(pfn));
        }
        let p = self.buddy.table.pg_mut(pfn);
        if p.refcount() == 0 {
            return Err(Error::BadFree(pfn));
        }
        p.set_owner(owner);
        Ok(())
    }

    /// Free pages inside `range` (any alignment); pages outside online memory count as
    /// not free.
    pub fn free_pages_in(&self, range: PfnRange) -> u64 {
        let mut free = 0;
        let mut pfn = Pfn(range.start.0 & !((1 << MAX_ORDER) - 1));
        while pfn.0 < range.end_exclusive.0 {
            match self.buddy.table.page(pfn) {
                Some(p) if p.is_buddy() && self.buddy.table.pfn_online(pfn) => {
                    let block = PfnRange::new(pfn, pfn.add(1 << p.order()));
                    free += block.intersect(range).nr_pages();
                    pfn = block.end_exclusive;
                }
                Some(_) => pfn = pfn.add(1),
                None => pfn = Pfn((pfn.section().0 + 1) << (SECTION_SHIFT - PAGE_SHIFT)),
            }
        }
        free
    }

    /// Page counts per zone, two entries (Normal, Movable) per node that has memory.
    pub fn stats(&self) -> impl Iterator<Item = ZoneStats> + '_ {
        self.buddy.seen_nodes().flat_map(|(node, n)| {
            ZoneType::ALL.into_iter().map(move |zone| {
                let z = &n.zones[zone.index()];
                ZoneStats {
                    node,
                    zone: Some(zone),
                    present_pages: z.present_pages,
                    managed_pages: z.managed_pages,
                    free_pages: z.free_pages(),
                    free_pages_by_type: z.nr_free,
                }
            })
        })
    }

    /// Sum over every zone of every node (`zone: None`).
    pub fn total_stats(&self) -> ZoneStats {
        self.stats().fold(ZoneStats::default(), |mut acc, z| {
            acc.present_pages += z.present_pages;
            acc.managed_pages += z.managed_pages;
            acc.free_pages += z.free_pages;
            for (a, b) in acc.free_pages_by_type.iter_mut().zip(z.free_pages_by_type) {
                *a += b;
            }
            acc
        })
    }

    /// Counts per node outside the zones.
    pub fn node_stats(&self) -> impl Iterator<Item = NodeStats> + '_ {
        self.buddy.seen_nodes().map(|(node, n)| NodeStats {
            node,
            offline_pages: n.offline_pages,
            mem_map_pages: n.mem_map_pages,
            reserved_pages: n.reserved_pages,
        })
    }

    /// Every present section, ascending.
    pub fn sections(&self) -> impl Iterator<Item = SectionInfo> + '_ {
        self.buddy
            .table
            .iter()
            .filter(|(_, s)| s.present() != 0)
            .map(|(nr, s)| {
                let state = if s.online() == 0 {
                    SectionState::Offline
                } else if s.online() == s.present() {
                    SectionState::Online
                } else {
                    SectionState::Partial
                };
                SectionInfo {
                    nr,
                    start: nr.start_addr(),
                    end: PhysAddr(nr.start_addr().0 + SECTION_SIZE),
                    node: s.node(),
                    zone: s.zone(),
                    state,
                    subsections_present: s.present().count_ones(),
                    subsections_online: s.online().count_ones(),
                    pageblocks_isolated: s.isolate_bits().count_ones(),
                    boot: s.is_boot(),
                }
            })
    }
}
