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
//! - or, instead of `mem_map`, descriptors per unit ([`super::memmap`]): each present
//!   subsection's 512 descriptors live in its own first 16 KiB, reached through the
//!   section's row of its chunk's unit table ([`UnitMaps`]). Such a section has no
//!   `mem_map`; an absent subsection of it has no descriptors (lookups see a hole).
//!
//! Invariants: `online ⊆ present`; `present != 0 ⇒ mem_map` or a unit map for every
//! present subsection (never both); `zone.is_some() ⇔ online != 0`; `isolate ⊆ online`.
//! Page -> pfn is O(1): the descriptor stores its section number and its index is its
//! offset in the section's mem_map (or in its unit's map, one of 64).
//!
//! Chunks come from the early allocator at boot (kept for good) or from the buddy
//! allocator at run time; a run-time chunk is freed when its last section is empty (no
//! mem_map, nothing present), and a chunk's unit table when its last unit map goes.
//!
//! Locks: part of `Mm`, under the kernel's `Mm` lock.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use super::memmap::{UnitMap, UnitMaps, UNIT_META_PAGES};
use super::page::{MigrateType, Page, ZoneType};
use super::store::MemMap;
use super::types::{
    NodeId, Pfn, PfnRange, PhysAddr, SectionNr, PAGES_PER_SECTION, PAGES_PER_SUBSECTION,
    PAGE_SHIFT, PAGE_SIZE, SECTION_SHIFT,
};

/// What a lookup of a pfn in an absent subsection of a section with per-unit descriptors
/// sees: a hole (it has no descriptor of its own).
static ABSENT: Page = Page::EMPTY;

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
    /// Sets the node of a section with per-unit descriptors (its first unit's).
    pub(crate) fn set_node(&mut self, node: NodeId) {
        self.node = node.index() as u8;
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
    /// The unit maps of its sections with per-unit descriptors (one [`UnitMaps`] row per
    /// section), while any of them has one.
    units: Option<MemMap<UnitMaps>>,
    /// From the early allocator: never freed.
    boot: bool,
}

impl Chunk {
    /// The unit map of subsection `sub` of section `i` of this chunk.
    fn unit(&self, i: usize, sub: u32) -> Option<&UnitMap> {
        self.units.as_ref()?.get(i)?.get(sub)
    }
}

/// Index of `nr`'s chunk in the root array, and of `nr` in its chunk.
fn split(nr: SectionNr) -> (usize, usize) {
    (
        (nr.0 >> CHUNK_SHIFT) as usize,
        (nr.0 & (SECTIONS_PER_CHUNK - 1)) as usize,
    )
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

    /// Installs the chunk covering section `nr` (`boot`: from the early allocator).
    pub(crate) fn install_chunk(&mut self, nr: SectionNr, sections: MemMap<Section>, boot: bool) {
        let slot = &mut self.roots[(nr.0 >> CHUNK_SHIFT) as usize];
        debug_assert!(slot.is_none());
        *slot = Some(Chunk {
            sections,
            units: None,
            boot,
        });
    }

    /// Takes out the run-time chunk covering `nr` if none of its sections holds anything
    /// (no mem_map, nothing present, no unit table): its mapping, for the model to release
    /// and free.
    pub(crate) fn take_empty_chunk(&mut self, nr: SectionNr) -> Option<MemMap<Section>> {
        let slot = self.roots.get_mut(split(nr).0)?;
        let c = slot.as_ref()?;
        let empty = !c.boot
            && c.units.is_none()
            && c.sections
                .iter()
                .all(|s| s.mem_map.is_none() && s.present == 0);
        if !empty {
            return None;
        }
        slot.take().map(|c| c.sections)
    }

    /// Whether the chunk of section `nr` exists and lacks a unit table.
    pub(crate) fn needs_unit_table(&self, nr: SectionNr) -> bool {
        self.roots
            .get(split(nr).0)
            .and_then(|r| r.as_ref())
            .is_some_and(|c| c.units.is_none())
    }

    /// Installs the unit table of the chunk covering section `nr` (which exists).
    pub(crate) fn install_unit_table(&mut self, nr: SectionNr, units: MemMap<UnitMaps>) {
        if let Some(c) = self.roots.get_mut(split(nr).0).and_then(|r| r.as_mut()) {
            debug_assert!(c.units.is_none());
            c.units = Some(units);
        }
    }

    /// Takes out the unit table of the chunk covering `nr` if no section of it has a unit
    /// map left: its mapping, for the model to release and free.
    pub(crate) fn take_empty_unit_table(&mut self, nr: SectionNr) -> Option<MemMap<UnitMaps>> {
        let c = self.roots.get_mut(split(nr).0)?.as_mut()?;
        if c.units.as_ref()?.iter().any(|row| !row.is_empty()) {
            return None;
        }
        c.units.take()
    }

    /// Whether section `nr` keeps its descriptors per unit: no mem_map, and either a unit
    /// map or nothing present (`fresh`: what an empty section would get).
    pub(crate) fn uses_units(&self, nr: SectionNr, fresh: bool) -> bool {
        match self.get(nr) {
            Some(s) if s.mem_map.is_some() => false,
            Some(s) if s.present != 0 => true,
            _ => fresh,
        }
    }

    /// Installs `map` as the unit map of the subsection starting at `unit` (its section
    /// has a unit table and no mem_map).
    pub(crate) fn set_unit(&mut self, unit: Pfn, map: UnitMap) {
        let (r, i) = split(unit.section());
        if let Some(row) = self.roots[r]
            .as_mut()
            .and_then(|c| c.units.as_mut())
            .and_then(|u| u.get_mut(i))
        {
            row.set(unit.subsection_in_section(), map);
        }
    }

    /// Takes out the unit map of the subsection starting at `unit`.
    pub(crate) fn take_unit(&mut self, unit: Pfn) -> Option<UnitMap> {
        let (r, i) = split(unit.section());
        self.roots
            .get_mut(r)?
            .as_mut()?
            .units
            .as_mut()?
            .get_mut(i)?
            .take(unit.subsection_in_section())
    }

    /// Whether `pfn` holds descriptors of its own unit (one of the first
    /// [`UNIT_META_PAGES`] pages of a subsection with a unit map).
    pub(crate) fn is_unit_meta(&self, pfn: Pfn) -> bool {
        (pfn.0 % PAGES_PER_SUBSECTION) < UNIT_META_PAGES && self.unit_map(pfn).is_some()
    }

    /// The unit map of the subsection holding `pfn`, if its section has per-unit
    /// descriptors and that subsection is present.
    pub(crate) fn unit_map(&self, pfn: Pfn) -> Option<&UnitMap> {
        let (r, i) = split(pfn.section());
        self.roots
            .get(r)?
            .as_ref()?
            .unit(i, pfn.subsection_in_section())
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

    /// The descriptor of `pfn` if its section has a mem_map (holes included) or per-unit
    /// descriptors (an absent unit reads as a hole). O(1).
    pub(crate) fn page(&self, pfn: Pfn) -> Option<&Page> {
        let (r, i) = split(pfn.section());
        let chunk = self.roots.get(r)?.as_ref()?;
        let sec = chunk.sections.get(i)?;
        if let Some(map) = &sec.mem_map {
            return map.get(pfn.index_in_section());
        }
        if sec.present == 0 {
            return None;
        }
        Some(
            chunk
                .unit(i, pfn.subsection_in_section())
                .map_or(&ABSENT, |u| u.page(pfn)),
        )
    }

    /// The descriptor of `pfn` if its section has a mem_map (holes included) or a unit map
    /// for it. O(1).
    pub(crate) fn page_mut(&mut self, pfn: Pfn) -> Option<&mut Page> {
        let (r, i) = split(pfn.section());
        let chunk = self.roots.get_mut(r)?.as_mut()?;
        let sec = chunk.sections.get_mut(i)?;
        if let Some(map) = &mut sec.mem_map {
            return map.get_mut(pfn.index_in_section());
        }
        chunk
            .units
            .as_mut()?
            .get_mut(i)?
            .get_mut(pfn.subsection_in_section())
            .map(|u| u.page_mut(pfn))
    }

    /// The descriptor slices of section `nr` between indices `lo..hi` (of the section):
    /// one piece of its mem_map, or one per unit map (absent units skipped), each with the
    /// index of its first descriptor.
    fn slices_mut(
        &mut self,
        nr: SectionNr,
        lo: usize,
        hi: usize,
    ) -> impl Iterator<Item = (usize, &mut [Page])> + '_ {
        let (r, i) = split(nr);
        let chunk = self.roots.get_mut(r).and_then(|c| c.as_mut());
        let (whole, units) = match chunk {
            Some(c) => match c.sections.get_mut(i) {
                Some(s) if s.mem_map.is_some() => (s.mem_map.as_deref_mut(), None),
                Some(_) => (None, c.units.as_mut().and_then(|u| u.get_mut(i))),
                None => (None, None),
            },
            None => (None, None),
        };
        let whole = whole.map(move |m| (lo, &mut m[lo..hi]));
        let units = units
            .into_iter()
            .flat_map(move |row| row.slices_mut(lo, hi));
        whole.into_iter().chain(units)
    }

    /// Shared twin of [`SectionTable::slices_mut`].
    pub(crate) fn slices(
        &self,
        nr: SectionNr,
        lo: usize,
        hi: usize,
    ) -> impl Iterator<Item = (usize, &[Page])> + '_ {
        let (r, i) = split(nr);
        let chunk = self.roots.get(r).and_then(|c| c.as_ref());
        let (whole, units) = match chunk {
            Some(c) => match c.sections.get(i) {
                Some(s) if s.mem_map.is_some() => (s.mem_map.as_deref(), None),
                Some(_) => (None, c.units.as_ref().and_then(|u| u.get(i))),
                None => (None, None),
            },
            None => (None, None),
        };
        let whole = whole.map(move |m| (lo, &m[lo..hi]));
        let units = units.into_iter().flat_map(move |row| row.slices(lo, hi));
        whole.into_iter().chain(units)
    }

    /// Calls `f(pfn, page)` for every page of `range` whose section has a mem_map, one
    /// section slice at a time (no per-page table walk).
    pub(crate) fn for_each_page_mut(&mut self, range: PfnRange, mut f: impl FnMut(Pfn, &mut Page)) {
        let mut pfn = range.start;
        while pfn.0 < range.end_exclusive.0 {
            let nr = pfn.section();
            let sec_end = nr.start_pfn().add(PAGES_PER_SECTION);
            let end = Pfn(sec_end.0.min(range.end_exclusive.0));
            let lo = pfn.index_in_section();
            let hi = lo + (end.0 - pfn.0) as usize;
            for (first, slice) in self.slices_mut(nr, lo, hi) {
                let base = nr.start_pfn().add(first as u64);
                for (i, page) in slice.iter_mut().enumerate() {
                    f(base.add(i as u64), page);
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
            let lo = pfn.index_in_section();
            let hi = lo + (end.0 - pfn.0) as usize;
            for (first, slice) in self.slices(nr, lo, hi) {
                if let Some(i) = slice.iter().position(&pred) {
                    return Some(nr.start_pfn().add((first + i) as u64));
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

    /// The pfn of a descriptor borrowed from this table, in O(1) (at most one comparison
    /// per unit for a section with per-unit descriptors).
    pub(crate) fn page_to_pfn(&self, page: &Page) -> Option<Pfn> {
        let nr = page.section();
        let addr = page as *const Page as usize;
        self.slices(nr, 0, PAGES_PER_SECTION as usize)
            .find_map(|(first, slice)| {
                let offset = addr.checked_sub(slice.as_ptr() as usize)?;
                let idx = offset / core::mem::size_of::<Page>();
                (offset % core::mem::size_of::<Page>() == 0 && idx < slice.len())
                    .then(|| nr.start_pfn().add((first + idx) as u64))
            })
    }

    /// Every section that has a mem_map or present memory, in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (SectionNr, &Section)> + '_ {
        self.roots
            .iter()
            .enumerate()
            .filter_map(|(r, c)| c.as_ref().map(|c| (r, c)))
            .flat_map(|(r, c)| {
                c.sections.iter().enumerate().filter_map(move |(i, s)| {
                    (s.mem_map.is_some() || s.present != 0)
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

    /// Allocated unit tables: (first section of their chunk, physical base).
    pub(crate) fn unit_tables(&self) -> impl Iterator<Item = (SectionNr, PhysAddr)> + '_ {
        self.roots.iter().enumerate().filter_map(|(r, c)| {
            let u = c.as_ref()?.units.as_ref()?;
            Some((SectionNr((r as u64) << CHUNK_SHIFT), u.base()))
        })
    }
}
