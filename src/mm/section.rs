//! The sparse section table: one [`Section`] per 128 MiB of physical address space that
//! holds (or held) memory, found in O(1) from a pfn.
//!
//! Model: the table covers the whole physical address range the CPU reports
//! (`2^pa_bits` bytes, up to 2^25 sections for 52 bits). It has two levels: a root array
//! allocated once at boot from the heap (one 16-byte slot per 64 GiB) and chunks of
//! [`SECTIONS_PER_CHUNK`] sections allocated on demand from physical memory through the
//! [`MemMapStore`](super::store::MemMapStore) (each chunk a [`MemMap`] of sections). So memory at 1 GiB and at 512 GiB costs two
//! 32 KiB chunks, not a table for the 511 GiB between.
//!
//! A section's meaning vs. its encoding:
//! - `present`: bitmap of the 64 subsections that hold RAM (plugged / in the DT);
//!   `pfn_valid` is exact to the subsection.
//! - `online`: bitmap of subsections whose pages belong to a zone (`online ⊆ present`).
//! - pageblock migrate types: two bitmaps (`isolate`, `movable`; neither = unmovable).
//! - `mem_map`: the section's `Page` array ([`MemMap`], which owns the pages holding it),
//!   always for all 32768 pages (holes included), allocated when the first subsection is
//!   added. It is freed when the last subsection
//!   is removed, except for boot sections (mem_map from the early allocator), which keep
//!   it for good.
//! - `node`: set when the section gets a mem_map: the node the mem_map was allocated for
//!   (the node of the section's lowest boot RAM, or of the `add_sections` call that
//!   created it). Pages of other nodes may share the section; each descriptor carries
//!   its own node and all accounting uses that (hole descriptors carry this one).
//! - `zone`: the zone of its online subsections, `None` when none is online (a section
//!   never mixes zones).
//!
//! Invariants: `online ⊆ present`; `present != 0 ⇒ mem_map`; `zone.is_some() ⇔ online != 0`;
//! `isolate ⊆ online`. Page -> pfn is O(1): the descriptor stores its section number and
//! its index is its offset in the section's mem_map.
//!
//! Locks: part of `Mm`, under the kernel's `Mm` lock.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use super::page::{MigrateType, Page, ZoneType};
use super::store::MemMap;
use super::types::{
    NodeId, Pfn, PfnRange, PhysAddr, SectionNr, PAGES_PER_SECTION, PAGE_SHIFT, PAGE_SIZE,
    SECTION_SHIFT,
};

/// log2 of sections per chunk.
pub const CHUNK_SHIFT: u32 = 9;
/// Sections per chunk of the table (64 GiB of address space).
pub const SECTIONS_PER_CHUNK: u64 = 1 << CHUNK_SHIFT;
/// Bytes of a section-table chunk.
pub const CHUNK_BYTES: u64 = SECTIONS_PER_CHUNK * core::mem::size_of::<Section>() as u64;
/// Buddy order of a chunk allocated at run time.
pub const CHUNK_ORDER: u32 = log2(CHUNK_BYTES / PAGE_SIZE);
/// Bytes of one section's mem_map.
pub const MEM_MAP_BYTES: u64 = PAGES_PER_SECTION * core::mem::size_of::<Page>() as u64;
/// Buddy order of a mem_map allocated at run time.
pub const MEM_MAP_ORDER: u32 = log2(MEM_MAP_BYTES / PAGE_SIZE);

const fn log2(x: u64) -> u32 {
    63 - x.leading_zeros()
}

const _: () = assert!(CHUNK_BYTES.is_power_of_two() && CHUNK_BYTES >= PAGE_SIZE);
const _: () = assert!(MEM_MAP_BYTES.is_power_of_two() && MEM_MAP_BYTES >= PAGE_SIZE);
const _: () = assert!(
    CHUNK_ORDER <= super::types::MAX_ORDER,
    "chunk exceeds a buddy block"
);
const _: () = assert!(
    MEM_MAP_ORDER <= super::types::MAX_ORDER,
    "mem_map exceeds a buddy block"
);
const _: () = assert!(core::mem::size_of::<Section>() <= 64);

const NO_ZONE: u8 = 0xff;
const SEC_BOOT: u8 = 1 << 0;

/// One 128 MiB section (see the module doc). Fields are private; read it through
/// [`SectionInfo`](super::SectionInfo).
pub struct Section {
    mem_map: Option<MemMap<Page>>,
    present: u64,
    online: u64,
    isolate: u64,
    movable: u64,
    node: u8,
    zone: u8,
    flags: u8,
}

impl Section {
    /// A section with nothing in it.
    pub const EMPTY: Section = Section {
        mem_map: None,
        present: 0,
        online: 0,
        isolate: 0,
        movable: 0,
        node: 0,
        zone: NO_ZONE,
        flags: 0,
    };

    pub(crate) fn has_mem_map(&self) -> bool {
        self.mem_map.is_some()
    }
    pub(crate) fn mem_map(&self) -> Option<&[Page]> {
        self.mem_map.as_deref()
    }
    pub(crate) fn mem_map_base(&self) -> Option<PhysAddr> {
        self.mem_map.as_ref().map(|m| m.base())
    }
    pub(crate) fn set_mem_map(&mut self, map: MemMap<Page>, node: NodeId, boot: bool) {
        self.mem_map = Some(map);
        self.node = node.index() as u8;
        self.flags = if boot { SEC_BOOT } else { 0 };
    }
    pub(crate) fn take_mem_map(&mut self) -> Option<MemMap<Page>> {
        self.mem_map.take()
    }
    pub(crate) fn is_boot(&self) -> bool {
        self.flags & SEC_BOOT != 0
    }
    pub(crate) fn present(&self) -> u64 {
        self.present
    }
    pub(crate) fn set_present(&mut self, bits: u64) {
        self.present = bits;
    }
    pub(crate) fn online(&self) -> u64 {
        self.online
    }
    pub(crate) fn set_online(&mut self, bits: u64) {
        self.online = bits;
    }
    pub(crate) fn node(&self) -> NodeId {
        NodeId::new(self.node as u32).unwrap_or(NodeId::ZERO)
    }
    pub(crate) fn zone(&self) -> Option<ZoneType> {
        match self.zone {
            NO_ZONE => None,
            z => Some(ZoneType::from_bits(z as u32)),
        }
    }
    pub(crate) fn set_zone(&mut self, zone: Option<ZoneType>) {
        self.zone = zone.map_or(NO_ZONE, |z| z as u8);
    }
    pub(crate) fn isolate_bits(&self) -> u64 {
        self.isolate
    }
    /// Migrate type of pageblock `idx` (0..64).
    pub(crate) fn migrate_type(&self, idx: u32) -> MigrateType {
        if self.isolate & (1 << idx) != 0 {
            MigrateType::Isolate
        } else if self.movable & (1 << idx) != 0 {
            MigrateType::Movable
        } else {
            MigrateType::Unmovable
        }
    }
    pub(crate) fn set_migrate_type(&mut self, idx: u32, mt: MigrateType) {
        let bit = 1u64 << idx;
        self.isolate &= !bit;
        self.movable &= !bit;
        match mt {
            MigrateType::Isolate => self.isolate |= bit,
            MigrateType::Movable => self.movable |= bit,
            MigrateType::Unmovable => {}
        }
    }
}

struct Chunk {
    sections: MemMap<Section>,
}

/// The two-level table (see the module doc).
pub(crate) struct SectionTable {
    pa_bits: u32,
    roots: Vec<Option<Chunk>>,
}

impl SectionTable {
    /// An empty table for a `pa_bits`-bit physical address space (range checked by caller).
    pub(crate) fn new(pa_bits: u32) -> SectionTable {
        let nr_sections = 1u64 << (pa_bits - SECTION_SHIFT);
        let nr_roots = nr_sections.div_ceil(SECTIONS_PER_CHUNK) as usize;
        let mut roots = Vec::with_capacity(nr_roots);
        roots.resize_with(nr_roots, || None);
        SectionTable { pa_bits, roots }
    }

    /// One past the last pfn of the address space.
    pub(crate) fn end_pfn(&self) -> Pfn {
        Pfn(1u64 << (self.pa_bits - PAGE_SHIFT))
    }

    /// Whether the chunk for section `nr` is still missing.
    pub(crate) fn needs_chunk(&self, nr: SectionNr) -> bool {
        self.roots
            .get((nr.0 >> CHUNK_SHIFT) as usize)
            .is_some_and(|r| r.is_none())
    }

    /// Installs the chunk covering section `nr`.
    pub(crate) fn install_chunk(&mut self, nr: SectionNr, sections: MemMap<Section>) {
        let slot = &mut self.roots[(nr.0 >> CHUNK_SHIFT) as usize];
        debug_assert!(slot.is_none());
        *slot = Some(Chunk { sections });
    }

    /// Section `nr`, if its chunk exists.
    pub(crate) fn get(&self, nr: SectionNr) -> Option<&Section> {
        let chunk = self.roots.get((nr.0 >> CHUNK_SHIFT) as usize)?.as_ref()?;
        chunk
            .sections
            .get((nr.0 & (SECTIONS_PER_CHUNK - 1)) as usize)
    }

    /// Section `nr`, if its chunk exists.
    pub(crate) fn get_mut(&mut self, nr: SectionNr) -> Option<&mut Section> {
        let chunk = self
            .roots
            .get_mut((nr.0 >> CHUNK_SHIFT) as usize)?
            .as_mut()?;
        chunk
            .sections
            .get_mut((nr.0 & (SECTIONS_PER_CHUNK - 1)) as usize)
    }

    /// The descriptor of `pfn` if its section has a mem_map (holes included). O(1).
    pub(crate) fn page(&self, pfn: Pfn) -> Option<&Page> {
        self.get(pfn.section())?
            .mem_map
            .as_ref()?
            .get(pfn.index_in_section())
    }

    /// The descriptor of `pfn` if its section has a mem_map (holes included). O(1).
    pub(crate) fn page_mut(&mut self, pfn: Pfn) -> Option<&mut Page> {
        self.get_mut(pfn.section())?
            .mem_map
            .as_mut()?
            .get_mut(pfn.index_in_section())
    }

    /// Calls `f(pfn, page)` for every page of `range` whose section has a mem_map, one
    /// section slice at a time (no per-page table walk).
    pub(crate) fn for_each_page_mut(&mut self, range: PfnRange, mut f: impl FnMut(Pfn, &mut Page)) {
        let mut pfn = range.start;
        while pfn.0 < range.end_exclusive.0 {
            let nr = pfn.section();
            let sec_end = nr.start_pfn().add(PAGES_PER_SECTION);
            let end = Pfn(sec_end.0.min(range.end_exclusive.0));
            if let Some(map) = self.get_mut(nr).and_then(|s| s.mem_map.as_deref_mut()) {
                let lo = pfn.index_in_section();
                let hi = lo + (end.0 - pfn.0) as usize;
                for (i, page) in map[lo..hi].iter_mut().enumerate() {
                    f(pfn.add(i as u64), page);
                }
            }
            pfn = end;
        }
    }

    /// The first pfn of `range` whose descriptor satisfies `pred`, scanning section slices
    /// (no per-page table walk). Pages of sections without a mem_map are skipped.
    pub(crate) fn find_page(&self, range: PfnRange, pred: impl Fn(&Page) -> bool) -> Option<Pfn> {
        let mut pfn = range.start;
        while pfn.0 < range.end_exclusive.0 {
            let nr = pfn.section();
            let end = Pfn(nr
                .start_pfn()
                .add(PAGES_PER_SECTION)
                .0
                .min(range.end_exclusive.0));
            if let Some(map) = self.get(nr).and_then(|s| s.mem_map.as_deref()) {
                let lo = pfn.index_in_section();
                let hi = lo + (end.0 - pfn.0) as usize;
                if let Some(i) = map[lo..hi].iter().position(&pred) {
                    return Some(pfn.add(i as u64));
                }
            }
            pfn = end;
        }
        None
    }

    /// The descriptor of a pfn the caller knows has one (internal invariant).
    pub(crate) fn pg(&self, pfn: Pfn) -> &Page {
        match self.page(pfn) {
            Some(p) => p,
            None => panic!("mm: no descriptor for {pfn:?}"),
        }
    }

    /// The descriptor of a pfn the caller knows has one (internal invariant).
    pub(crate) fn pg_mut(&mut self, pfn: Pfn) -> &mut Page {
        match self.page_mut(pfn) {
            Some(p) => p,
            None => panic!("mm: no descriptor for {pfn:?}"),
        }
    }

    /// Whether `pfn` lies in a present subsection.
    pub(crate) fn pfn_valid(&self, pfn: Pfn) -> bool {
        self.get(pfn.section())
            .is_some_and(|s| s.present & (1 << pfn.subsection_in_section()) != 0)
    }

    /// Whether `pfn` lies in an online subsection.
    pub(crate) fn pfn_online(&self, pfn: Pfn) -> bool {
        self.get(pfn.section())
            .is_some_and(|s| s.online & (1 << pfn.subsection_in_section()) != 0)
    }

    /// Migrate type of the pageblock holding `pfn` (Unmovable if no section).
    pub(crate) fn migrate_type(&self, pfn: Pfn) -> MigrateType {
        self.get(pfn.section()).map_or(MigrateType::Unmovable, |s| {
            s.migrate_type(pfn.subsection_in_section())
        })
    }

    /// The pfn of a descriptor borrowed from this table, in O(1).
    pub(crate) fn page_to_pfn(&self, page: &Page) -> Option<Pfn> {
        let nr = page.section();
        let map = self.get(nr)?.mem_map.as_ref()?;
        let base = map.as_ptr() as usize;
        let addr = page as *const Page as usize;
        let offset = addr.checked_sub(base)?;
        let idx = offset / core::mem::size_of::<Page>();
        if offset % core::mem::size_of::<Page>() != 0 || idx >= map.len() {
            return None;
        }
        Some(nr.start_pfn().add(idx as u64))
    }

    /// Every section that has a mem_map, in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (SectionNr, &Section)> + '_ {
        self.roots
            .iter()
            .enumerate()
            .filter_map(|(r, c)| c.as_ref().map(|c| (r, c)))
            .flat_map(|(r, c)| {
                c.sections.iter().enumerate().filter_map(move |(i, s)| {
                    s.mem_map
                        .is_some()
                        .then_some((SectionNr(((r as u64) << CHUNK_SHIFT) + i as u64), s))
                })
            })
    }

    /// Allocated chunks: (first section, physical base).
    pub(crate) fn chunks(&self) -> impl Iterator<Item = (SectionNr, PhysAddr)> + '_ {
        self.roots.iter().enumerate().filter_map(|(r, c)| {
            c.as_ref()
                .map(|c| (SectionNr((r as u64) << CHUNK_SHIFT), c.sections.base()))
        })
    }
}
