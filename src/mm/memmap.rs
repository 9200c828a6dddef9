//! Where page descriptors live: in existing (Normal) memory, one 1 MiB mem_map per
//! section, or (memmap on memory) inside the hot-plugged memory they describe, 16 KiB at
//! the start of every 2 MiB unit.
//!
//! # Layout
//! ```text
//!  off (and boot sections): one mem_map per section, from Normal memory
//!    Normal:  [ kernel | ... | mem_map s1 (1 MiB) | mem_map s2 (1 MiB) | ... ]
//!    s1:      [ unit 0 (2 MiB) | unit 1 | ... | unit 63 ]       all 512 pages usable
//!
//!  on (hot-plugged sections): every unit carries its own descriptors
//!    s1:      [ D | unit 0 ...... ][ D | unit 1 ...... ] ... [ D | unit 63 ..... ]
//!               D = 16 KiB: the 512 descriptors of that unit (its first 4 pages)
//!    Normal:  [ ... | table chunk (32 KiB / 64 GiB) | unit table (256 KiB / 64 GiB) ]
//! ```
//! A unit is a subsection (2 MiB, also a pageblock): the unit of presence in the model and
//! of plugging in the vmem policy. Its 512 descriptors of 32 bytes are 16 KiB, exactly four
//! pages ([`UNIT_META_PAGES`]), at the unit's start. The section finds them through its row
//! of the unit table of its section-table chunk ([`UnitMaps`]: one pointer per unit, 512
//! bytes per section), so a section with per-unit descriptors has no mem_map.
//!
//! Why per unit, not a per-section mem_map in one "carrier" unit: a unit is self-contained.
//! Any unit can be added or removed in any order (the chunked hotplug calls go in ascending
//! order, the unplug policy picks victims by use), nothing ever describes memory outside
//! the unit holding it, so no unit must be plugged first or leave last, and a unit's
//! descriptors go away in the same call that makes it absent. The price is 4 pages of every
//! 512 (0.78 %, the same share a 1 MiB mem_map is of a section) in every unit, and no free
//! block larger than 1 MiB in such memory (a unit's free pages start after its descriptors:
//! blocks of order 2, 3, ..., 8). The pointers cost Normal memory: 256 KiB per 64 GiB of
//! address space that holds such sections (4 KiB per GiB when full), next to the 32 KiB
//! table chunk, instead of 8 MiB per GiB of mem_maps.
//!
//! Device blocks: with 1 MiB blocks the policy plugs a unit as two blocks in one request,
//! and the model sees the unit only once both are in, so the descriptors (in the first
//! block) never describe a half-plugged unit. Blocks of 128 MiB or 1 GiB are whole sections
//! (eight for 1 GiB): the model adds them unit by unit, each unit with its own descriptors.
//!
//! # States of the descriptor pages
//! Made when the unit is added (`add_sections`, before it is present): the four pages are
//! flagged `MEMMAP`, hold the unit's descriptors, and are never free: they are not put in
//! the buddy allocator at onlining, so nothing allocates them and migration never picks
//! them as a destination; offlining takes the rest of the unit; removing the unit releases
//! the mapping to the store and the pages leave with the unit (they are not freed into any
//! allocator: they are not the model's any more). A removed unit's descriptors are
//! therefore never read again, which is what lets the hotplug path send UNPLUG only after
//! the model is done with the unit.
//!
//! Accounting: the pages are present (in the zone, while the unit is online) but not
//! managed, and counted in their node's `mem_map_pages` while the unit is present; so the
//! Movable zone's `managed` is below its `present` by 4 pages per online unit, and `mem`
//! shows that gap as bookkeeping, not free memory. Memory tests of "everything plugged"
//! test everything managed.
//!
//! # Handles
//! The pages are named by a [`MetaPages`] handle like every other metadata allocation, made
//! by the model from the unit's first page (the position is the allocation: nothing else
//! may hand those pages out, since they are never free). The store maps the handle; the
//! unit table keeps only the 16 KiB slice, and the model rebuilds the handle from the
//! unit's address to give the mapping back through [`MemMapStore::release`] before the unit
//! leaves. A mapping thus never outlives its pages: the pages are the unit's, and the unit
//! is made absent only after its mapping was released.
//!
//! # What `check` verifies
//! A section has a mem_map or unit maps, never both; a unit map exists exactly for each
//! present subsection of a section with unit maps; the four pages of each are flagged
//! `MEMMAP` and nothing else (online or offline), so none is free or allocated, and no free
//! block covers one; the node counts include them. Host property tests add what the
//! checker cannot see: no allocation returns one, every live mapping of the store lies in
//! present memory, and all metadata is gone when the memory is.
//!
//! Locks: part of `Mm`, under the kernel's `Mm` lock. A unit's descriptors (16 KiB) are
//! written inside the hold that adds the unit; a chunk of the chunked calls is 8 units, the
//! same 128 KiB per hold as a mem_map-backed chunk.
#![forbid(unsafe_code)]

use super::model::Mm;
use super::page::{Page, PageFlags};
use super::section::SECTIONS_PER_CHUNK;
use super::store::{MemMap, MemMapStore, MetaPages};
use super::types::*;
use super::Error;

/// Pages of one unit's descriptors, at the unit's start.
pub const UNIT_META_PAGES: u64 = UNIT_META_BYTES / PAGE_SIZE;
/// Bytes of one unit's descriptors.
pub const UNIT_META_BYTES: u64 = PAGES_PER_SUBSECTION * core::mem::size_of::<Page>() as u64;
/// The handle order of one unit's descriptors.
pub const UNIT_META_ORDER: u32 = UNIT_META_PAGES.trailing_zeros();
/// Bytes of a chunk's unit table.
pub const UNIT_TABLE_BYTES: u64 = SECTIONS_PER_CHUNK * core::mem::size_of::<UnitMaps>() as u64;
/// Buddy order of a chunk's unit table.
pub const UNIT_TABLE_ORDER: u32 = (UNIT_TABLE_BYTES / PAGE_SIZE).trailing_zeros();

const UNIT_LEN: usize = PAGES_PER_SUBSECTION as usize;

const _: () = assert!(UNIT_META_BYTES % PAGE_SIZE == 0 && UNIT_META_PAGES.is_power_of_two());
const _: () = assert!(UNIT_TABLE_BYTES.is_power_of_two() && UNIT_TABLE_ORDER <= MAX_ORDER);
const _: () = assert!(
    PAGES_PER_SUBSECTION == PAGES_PER_PAGEBLOCK,
    "a unit is a pageblock"
);
const _: () = assert!(core::mem::size_of::<Option<UnitMap>>() == 8);

/// One unit's 512 descriptors, stored in the unit's own first pages (see the module doc).
pub struct UnitMap {
    items: &'static mut [Page; UNIT_LEN],
}

impl UnitMap {
    /// The descriptor of `pfn` (in this unit).
    pub(crate) fn page(&self, pfn: Pfn) -> &Page {
        &self.items[(pfn.0 % PAGES_PER_SUBSECTION) as usize]
    }
    /// The descriptor of `pfn` (in this unit).
    pub(crate) fn page_mut(&mut self, pfn: Pfn) -> &mut Page {
        &mut self.items[(pfn.0 % PAGES_PER_SUBSECTION) as usize]
    }
}

/// The unit maps of one section, one slot per subsection (a row of a chunk's unit table).
pub struct UnitMaps([Option<UnitMap>; 64]);

impl UnitMaps {
    /// A row with no unit map.
    pub const EMPTY: UnitMaps = UnitMaps([const { None }; 64]);

    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
    pub(crate) fn get(&self, sub: u32) -> Option<&UnitMap> {
        self.0.get(sub as usize)?.as_ref()
    }
    pub(crate) fn get_mut(&mut self, sub: u32) -> Option<&mut UnitMap> {
        self.0.get_mut(sub as usize)?.as_mut()
    }
    pub(crate) fn set(&mut self, sub: u32, map: UnitMap) {
        self.0[sub as usize] = Some(map);
    }
    pub(crate) fn take(&mut self, sub: u32) -> Option<UnitMap> {
        self.0.get_mut(sub as usize)?.take()
    }

    /// The descriptor slices of the section's indices `lo..hi`, one per unit map (absent
    /// units skipped), each with the section index of its first descriptor.
    pub(crate) fn slices(&self, lo: usize, hi: usize) -> impl Iterator<Item = (usize, &[Page])> {
        self.0.iter().enumerate().filter_map(move |(k, u)| {
            let (a, b) = clip(k, lo, hi)?;
            Some((a, &u.as_ref()?.items[a - k * UNIT_LEN..b - k * UNIT_LEN]))
        })
    }

    /// Mutable twin of [`UnitMaps::slices`].
    pub(crate) fn slices_mut(
        &mut self,
        lo: usize,
        hi: usize,
    ) -> impl Iterator<Item = (usize, &mut [Page])> {
        self.0.iter_mut().enumerate().filter_map(move |(k, u)| {
            let (a, b) = clip(k, lo, hi)?;
            Some((
                a,
                &mut u.as_mut()?.items[a - k * UNIT_LEN..b - k * UNIT_LEN],
            ))
        })
    }
}

/// The part of unit `k` inside section indices `lo..hi`, if any.
fn clip(k: usize, lo: usize, hi: usize) -> Option<(usize, usize)> {
    let (a, b) = ((k * UNIT_LEN).max(lo), ((k + 1) * UNIT_LEN).min(hi));
    (a < b).then_some((a, b))
}

/// The first pfn of every unit (subsection) of the 2 MiB-aligned `range`.
fn units(range: PfnRange) -> impl Iterator<Item = Pfn> {
    (range.start.0..range.end_exclusive.0)
        .step_by(UNIT_LEN)
        .map(Pfn)
}

impl<S: MemMapStore> Mm<S> {
    /// Whether sections created from now on keep their descriptors in their own units
    /// (`memmap_on_memory=on`). Sections that exist keep the placement they have.
    pub fn set_memmap_on_memory(&mut self, on: bool) {
        self.memmap_on_memory = on;
    }

    /// Whether new sections get per-unit descriptors.
    pub fn memmap_on_memory(&self) -> bool {
        self.memmap_on_memory
    }

    /// Bytes of Normal memory that adding the absent, 2 MiB-aligned `range` would take
    /// for metadata: table chunks it lacks, and per section either a mem_map (sections
    /// that would get one) or its chunk's unit table (memmap on memory). O(sections).
    pub fn metadata_bytes_for(&self, range: PfnRange) -> u64 {
        let t = &self.buddy.table;
        let (first, last) = range.sections();
        let mut bytes = 0;
        // The last chunk counted for its table chunk and for its unit table.
        let (mut chunk_counted, mut table_counted) = (None, None);
        for nr in (first.0..last.0).map(SectionNr) {
            let chunk = Some(nr.0 / SECTIONS_PER_CHUNK);
            if chunk_counted != chunk && t.needs_chunk(nr) {
                bytes += super::section::CHUNK_BYTES;
            }
            chunk_counted = chunk;
            if t.uses_units(nr, self.memmap_on_memory) {
                let lacks_table = t.needs_chunk(nr) || t.needs_unit_table(nr);
                if table_counted != chunk && lacks_table {
                    bytes += UNIT_TABLE_BYTES;
                }
                table_counted = chunk;
            } else if !t.get(nr).is_some_and(|s| s.has_mem_map()) {
                bytes += super::section::MEM_MAP_BYTES;
            }
        }
        bytes
    }

    /// Gives the chunk of section `nr` (which exists) a unit table if it has none.
    pub(super) fn ensure_unit_table(&mut self, nr: SectionNr, node: NodeId) -> Result<(), Error> {
        if self.buddy.table.needs_unit_table(nr) {
            let meta = self.alloc_meta(UNIT_TABLE_ORDER, node)?;
            let table = self.store.map::<UnitMaps>(meta);
            self.buddy.table.install_unit_table(nr, table);
        }
        Ok(())
    }

    /// Writes the descriptors of every unit of `range` (absent, in a section with a unit
    /// table and no mem_map) into the unit's own first pages: `fill` for every page, the
    /// same with only `MEMMAP` for the descriptor pages. Returns the descriptor pages.
    pub(super) fn add_unit_maps(&mut self, range: PfnRange, fill: Page) -> u64 {
        let mut meta_page = fill;
        meta_page.set_flags(PageFlags::MEMMAP);
        let mut n = 0;
        for unit in units(range) {
            let meta = MetaPages::new(unit, UNIT_META_ORDER);
            let (_, items) = self.store.map_filled::<Page>(meta, fill).into_parts();
            let items: &'static mut [Page; UNIT_LEN] = match items.try_into() {
                Ok(items) => items,
                Err(_) => unreachable!("a unit handle holds {UNIT_LEN} descriptors"),
            };
            items[..UNIT_META_PAGES as usize].fill(meta_page);
            self.buddy.table.set_unit(unit, UnitMap { items });
            n += UNIT_META_PAGES;
        }
        n
    }

    /// Releases the unit maps of every unit of `range` to the store (the units are about to
    /// become absent): their pages leave with the units.
    pub(super) fn remove_unit_maps(&mut self, range: PfnRange) {
        for unit in units(range) {
            if let Some(u) = self.buddy.table.take_unit(unit) {
                let map = MemMap::new(MetaPages::new(unit, UNIT_META_ORDER), u.items);
                let meta = self.store.release(map);
                leaves_with_unit(meta);
            }
        }
    }

    /// Descriptor pages of per-unit maps inside `range` (2 MiB aligned): present pages
    /// that are neither free nor allocated, and leave with their units.
    pub fn unit_meta_in(&self, range: PfnRange) -> u64 {
        units(range)
            .filter(|&u| self.buddy.table.unit_map(u).is_some())
            .count() as u64
            * UNIT_META_PAGES
    }

    /// Frees what section `nr` no longer needs: its mem_map once nothing in it is present
    /// (not for boot sections), its chunk's unit table once no unit map is left in the
    /// chunk, and the chunk once none of its sections holds anything (not boot chunks).
    pub(super) fn release_section_meta(&mut self, nr: SectionNr) {
        self.drop_mem_map(nr);
        if let Some(table) = self.buddy.table.take_empty_unit_table(nr) {
            let meta = self.store.release(table);
            self.free_meta(meta);
        }
        if let Some(chunk) = self.buddy.table.take_empty_chunk(nr) {
            let meta = self.store.release(chunk);
            self.free_meta(meta);
        }
    }

    /// Free blocks of `range` for onlining: the range minus the descriptor pages at the
    /// start of each unit that has a unit map.
    pub(super) fn free_online(&mut self, range: PfnRange) {
        if self.unit_meta_in(range) == 0 {
            self.buddy.free_range(range);
            return;
        }
        for unit in units(range) {
            let skip = if self.buddy.table.unit_map(unit).is_some() {
                UNIT_META_PAGES
            } else {
                0
            };
            self.buddy.free_range(PfnRange::new(
                unit.add(skip),
                unit.add(PAGES_PER_SUBSECTION),
            ));
        }
    }
}

/// The end of a unit's descriptor handle: its mapping is released and the unit is leaving
/// the model, so the pages go with it rather than back to an allocator.
fn leaves_with_unit(meta: MetaPages) {
    let _ = meta.start();
}
