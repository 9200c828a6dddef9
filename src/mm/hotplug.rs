//! Run-time section operations used by hotplug: add, online, isolate, un-isolate,
//! offline and remove ranges of 2 MiB subsections (see the state diagram in [`super`]).
//!
//! Every call validates the whole range before it changes anything, so an `Err` leaves
//! the model as it was: memory `add_sections` could not get unwinds the metadata it
//! allocated (mem_maps, and table chunks and unit tables left empty).
//!
//! mem_map placement: a section's mem_map (1 MiB), a new table chunk and a chunk's unit
//! table come from the buddy allocator as unmovable memory, trying the section's node
//! first. Those pages are marked `MEMMAP`, leave the managed count of their zone and join
//! the node's `mem_map_pages`; removing the last subsection of a run-time section reverses
//! that, and so does the last section of a run-time chunk for its chunk and unit table.
//! With memmap on memory ([`super::memmap`]) a new section has no mem_map: each unit
//! carries its own descriptors, written when it is added and released when it is removed;
//! those pages are present but never managed, free or allocated.
//!
//! Nodes: each call takes one node (`add_sections`) or none; a range may cover pages of
//! several nodes (a section or subsection split by a boot-time node boundary), and every
//! count moves by the node of each page. `add_sections` into a section that already holds
//! another node's memory is allowed (the new pages get the call's node, the section
//! keeps its mem_map and node). A subsection split between two nodes at boot goes back
//! on one node if it is removed and added again: run-time calls work in whole 2 MiB
//! subsections of one node.
//!
//! Isolated onlining: the same calls can put pages online with their pageblocks isolated
//! (free, but on the `Isolate` lists nothing allocates from), the state `isolate_range`
//! would leave; [`super::chunked`] adds a range that way so that no page of it is handed
//! out until all of it is in.
//!
//! Locks: `&mut Mm`, under the kernel's `Mm` lock. The calls walk descriptors
//! (O(pages in range)); hotplug calls them from deferred work, never from an interrupt,
//! through [`super::chunked`], one chunk per hold. Adding a chunk to a section without a
//! mem_map has two halves for it (`prepare_mem_map`, `add_online_chunk`): the new
//! mem_map is filled between them, outside the lock.
#![forbid(unsafe_code)]

use super::model::Mm;
use super::page::{MigrateType, Page, PageFlags, ZoneType};
use super::section::{Section, CHUNK_ORDER, MEM_MAP_ORDER};
use super::store::{MemMap, MemMapStore, MetaPages};
use super::types::*;
use super::{AllocFlags, Error};

/// How [`Mm::online_piece`] puts pages online: allocatable (the zone's migrate type) or
/// isolated (free but on the `Isolate` lists, which nothing allocates from).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Online {
    Allocatable,
    Isolated,
}

/// One section's share of a range: the section, the range piece and its subsection mask.
#[derive(Clone, Copy)]
struct Piece {
    nr: SectionNr,
    range: PfnRange,
    mask: u64,
}

/// Splits a 2 MiB-aligned range into per-section pieces.
fn pieces(range: PfnRange) -> impl Iterator<Item = Piece> {
    let (first, last) = range.sections();
    (first.0..last.0).map(move |nr| {
        let nr = SectionNr(nr);
        let sec = PfnRange::new(nr.start_pfn(), nr.start_pfn().add(PAGES_PER_SECTION));
        let piece = range.intersect(sec);
        let lo = piece.start.subsection_in_section();
        let n = (piece.nr_pages() / PAGES_PER_SUBSECTION) as u32;
        let mask = if n == 64 {
            u64::MAX
        } else {
            ((1u64 << n) - 1) << lo
        };
        Piece {
            nr,
            range: piece,
            mask,
        }
    })
}

/// The descriptor of a present page of section `nr` on `node`: offline, or (with `zone`)
/// ready to go online into that zone (flags clear, zone set, unlinked).
fn template(nr: SectionNr, node: NodeId, zone: Option<ZoneType>) -> Page {
    match zone {
        None => Page::init(nr, node, PageFlags::OFFLINE),
        Some(z) => {
            let mut t = Page::init(nr, node, PageFlags::empty());
            t.set_zone(z);
            t
        }
    }
}

/// First pfn of the lowest subsection set in `bits` within section `nr`.
fn first_pfn(nr: SectionNr, bits: u64) -> Pfn {
    nr.start_pfn()
        .add(u64::from(bits.trailing_zeros()) * PAGES_PER_SUBSECTION)
}

impl<S: MemMapStore> Mm<S> {
    /// Checks that `range` is a non-empty, subsection-aligned range the model can describe.
    fn check_range(&self, range: PfnRange) -> Result<(), Error> {
        self.check_bounds(range, PAGES_PER_SUBSECTION)
    }

    /// Checks that `range` is non-empty, aligned to `align_pages` and below the physical
    /// address limit: what every run-time call on a range checks first.
    pub(super) fn check_bounds(&self, range: PfnRange, align_pages: u64) -> Result<(), Error> {
        if range.is_empty() {
            return Err(Error::InvalidRange);
        }
        if !range.is_aligned(align_pages) {
            return Err(Error::Unaligned);
        }
        if range.end_exclusive.0 > self.buddy.table.end_pfn().0 {
            return Err(Error::BeyondPhysLimit);
        }
        Ok(())
    }

    /// Allocates `2^order` unmovable pages for metadata, preferring `node`: the handle
    /// the store maps.
    pub(super) fn alloc_meta(&mut self, order: u32, node: NodeId) -> Result<MetaPages, Error> {
        let pfn = self
            .buddy
            .alloc(order, AllocFlags::UNMOVABLE.on_node(node))
            .map_err(|_| Error::NoMemory)?;
        self.account_meta(pfn, order, true);
        Ok(MetaPages::new(pfn, order))
    }

    /// Moves the `2^order` allocated pages at `pfn` into metadata (`to_meta`) or back out:
    /// their `MEMMAP` flag, and the pages move between their node's mem_map count and their
    /// zone's managed pages.
    fn account_meta(&mut self, pfn: Pfn, order: u32, to_meta: bool) {
        let nr_pages = 1u64 << order;
        let (pnode, zone) = {
            let p = self.buddy.table.pg(pfn);
            (p.node(), p.zone())
        };
        for i in 0..nr_pages {
            let p = self.buddy.table.pg_mut(pfn.add(i));
            if to_meta {
                p.insert_flags(PageFlags::MEMMAP);
            } else {
                p.remove_flags(PageFlags::MEMMAP);
            }
        }
        let n = &mut self.buddy.nodes[pnode.index()];
        let z = &mut n.zones[zone.index()];
        if to_meta {
            z.managed_pages -= nr_pages;
            n.mem_map_pages += nr_pages;
        } else {
            z.managed_pages += nr_pages;
            n.mem_map_pages -= nr_pages;
        }
    }

    /// Frees metadata pages allocated by `alloc_meta`: the handle comes back from the
    /// store's `release`, so they are no longer mapped.
    pub(super) fn free_meta(&mut self, meta: MetaPages) {
        let (pfn, order) = (meta.start(), meta.order());
        self.account_meta(pfn, order, false);
        if let Err(e) = self.buddy.free(pfn, order) {
            // Our own allocation: refusing it means the model is corrupt.
            panic!("mm: freeing metadata at {pfn:?} failed: {e}");
        }
    }

    /// Drops the mem_map of section `nr` (present must be 0, not a boot section).
    pub(super) fn drop_mem_map(&mut self, nr: SectionNr) {
        let Some(sec) = self.buddy.table.get_mut(nr) else {
            return;
        };
        if sec.is_boot() || sec.present() != 0 {
            return;
        }
        if let Some(map) = sec.take_mem_map() {
            let meta = self.store.release(map);
            self.free_meta(meta);
        }
    }

    /// Makes the 2 MiB-aligned `range` present on `node` (absent -> offline), allocating
    /// mem_maps and table chunks from existing memory (unmovable, `node` first). The
    /// range may share a section with memory of another node; that section keeps its
    /// mem_map and node, the new pages are on `node`.
    pub fn add_sections(&mut self, range: PfnRange, node: NodeId) -> Result<(), Error> {
        self.add_sections_as(range, node, None)
    }

    /// [`Mm::add_sections`] then [`Mm::online_range`] in one pass over the new descriptors:
    /// what hotplug does with freshly plugged memory. The same errors as the two calls (the
    /// zone is checked before anything changes); on error nothing changed.
    pub fn add_online_range(
        &mut self,
        range: PfnRange,
        node: NodeId,
        zone: ZoneType,
    ) -> Result<(), Error> {
        self.add_online_as(range, node, zone, Online::Allocatable)
    }

    /// [`Mm::add_online_range`] with `online` saying whether the pages go online isolated.
    pub(super) fn add_online_as(
        &mut self,
        range: PfnRange,
        node: NodeId,
        zone: ZoneType,
        online: Online,
    ) -> Result<(), Error> {
        self.check_zone(range, zone)?;
        self.add_sections_as(range, node, Some(zone))?;
        for p in pieces(range) {
            self.online_piece(&p, zone, Some(node), online);
        }
        Ok(())
    }

    /// What [`Mm::add_online_range`] checks before it allocates anything: the range is
    /// valid, absent, and its sections hold no zone but `zone`.
    pub(super) fn check_add_online(&self, range: PfnRange, zone: ZoneType) -> Result<(), Error> {
        self.check_zone(range, zone)?;
        self.check_absent(range)
    }

    /// Checks that no section of `range` with per-unit descriptors holds another node.
    fn check_node(&self, range: PfnRange, node: NodeId) -> Result<(), Error> {
        for p in pieces(range) {
            if let Some(sec) = self.buddy.table.get(p.nr) {
                if !sec.has_mem_map() && sec.present() != 0 && sec.node() != node {
                    return Err(Error::NodeConflict(p.nr));
                }
            }
        }
        Ok(())
    }

    /// The zone of the section holding `pfn` (`None`: nothing online there).
    pub(super) fn zone_at(&self, pfn: Pfn) -> Option<ZoneType> {
        self.buddy.table.get(pfn.section()).and_then(|s| s.zone())
    }

    /// Checks that `range` is a valid run-time range whose sections hold no zone but `zone`.
    fn check_zone(&self, range: PfnRange, zone: ZoneType) -> Result<(), Error> {
        self.check_range(range)?;
        for p in pieces(range) {
            if let Some(sec) = self.buddy.table.get(p.nr) {
                if sec.zone().is_some_and(|z| z != zone) {
                    return Err(Error::ZoneConflict(p.nr));
                }
            }
        }
        Ok(())
    }

    /// Adds `range` on `node`; its descriptors are written as offline pages, or (with
    /// `online_as`) already in the state [`Mm::online_piece`] expects without a rewrite.
    fn add_sections_as(
        &mut self,
        range: PfnRange,
        node: NodeId,
        online_as: Option<ZoneType>,
    ) -> Result<(), Error> {
        self.check_range(range)?;
        self.check_absent(range)?;
        self.check_node(range, node)?;
        // Metadata first; on failure give back the mem_maps of this call.
        let mut failed = None;
        // Sections whose mem_map this call creates (already initialised for the range).
        let mut created = 0u64;
        for (i, p) in pieces(range).enumerate() {
            match self.add_section_meta(p.nr, node, p.range, template(p.nr, node, online_as)) {
                Ok(new) => created |= u64::from(new) << (i % 64),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            for p in pieces(range) {
                self.release_section_meta(p.nr);
            }
            return Err(e);
        }
        self.buddy.nodes[node.index()].seen = true;
        for (i, p) in pieces(range).enumerate() {
            let nr = p.nr;
            let t = template(nr, node, online_as);
            let mut meta = 0;
            if let Some(sec) = self.buddy.table.get_mut(nr).filter(|s| !s.has_mem_map()) {
                if sec.present() == 0 {
                    sec.set_node(node);
                }
                meta = self.add_unit_maps(p.range, t);
            } else if i >= 64 || created & (1 << i) == 0 {
                // `created` only tracks the first 64 pieces; later ones are re-initialised.
                self.buddy.table.for_each_page_mut(p.range, |_, pg| *pg = t);
            }
            if let Some(sec) = self.buddy.table.get_mut(p.nr) {
                sec.set_present(sec.present() | p.mask);
            }
            let n = &mut self.buddy.nodes[node.index()];
            n.offline_pages += p.range.nr_pages() - meta;
            n.mem_map_pages += meta;
        }
        Ok(())
    }

    /// First half of adding a chunk in bounded holds ([`super::chunked`]): gives the section
    /// of `range` (inside one section) its table chunk, and allocates its mem_map if it has
    /// none. Returns the mem_map's pages and the value (a hole on `node`) every descriptor
    /// must hold before [`Mm::add_online_chunk`] installs them; the caller writes it outside
    /// the lock, since nothing reaches the pages until then.
    pub(super) fn prepare_mem_map(
        &mut self,
        range: PfnRange,
        node: NodeId,
    ) -> Result<Option<(MetaPages, Page)>, Error> {
        let nr = range.start.section();
        Ok(self
            .alloc_section_meta(nr, node)?
            .map(|meta| (meta, Page::init(nr, node, PageFlags::HOLE))))
    }

    /// Installs the table chunk of section `nr` if it has none, and allocates the pages of
    /// its mem_map if it has none (`None`: it has one).
    fn alloc_section_meta(
        &mut self,
        nr: SectionNr,
        node: NodeId,
    ) -> Result<Option<MetaPages>, Error> {
        if self.buddy.table.needs_chunk(nr) {
            let meta = self.alloc_meta(CHUNK_ORDER, node)?;
            let chunk = self.store.map::<Section>(meta);
            self.buddy.table.install_chunk(nr, chunk, false);
        }
        if self.buddy.table.uses_units(nr, self.memmap_on_memory) {
            self.ensure_unit_table(nr, node)?;
            return Ok(None);
        }
        if self.buddy.table.get(nr).is_some_and(|s| s.has_mem_map()) {
            return Ok(None);
        }
        self.alloc_meta(MEM_MAP_ORDER, node).map(Some)
    }

    /// Second half: installs `map` (from [`Mm::prepare_mem_map`], every descriptor a hole)
    /// as the section's mem_map, then adds `range` on `node` and puts it online into `zone`
    /// in one pass, `online` saying whether isolated. The range's descriptors are rewritten,
    /// the rest of the mem_map stays holes. On error the section is as before the call (a
    /// mem_map it installed is freed again).
    pub(super) fn add_online_chunk(
        &mut self,
        range: PfnRange,
        node: NodeId,
        zone: ZoneType,
        map: Option<MemMap<Page>>,
        online: Online,
    ) -> Result<(), Error> {
        let nr = range.start.section();
        if let Some(map) = map {
            match self.buddy.table.get_mut(nr) {
                Some(sec) if !sec.has_mem_map() => sec.set_mem_map(map, node, false),
                // Prepared but no longer needed (the section got one meanwhile).
                _ => {
                    let meta = self.store.release(map);
                    self.free_meta(meta);
                }
            }
        }
        self.add_online_as(range, node, zone, online)
            .inspect_err(|_| self.release_section_meta(nr))
    }

    /// Checks that no subsection of `range` is present.
    fn check_absent(&self, range: PfnRange) -> Result<(), Error> {
        for p in pieces(range) {
            if let Some(sec) = self.buddy.table.get(p.nr) {
                if sec.present() & p.mask != 0 {
                    return Err(Error::AlreadyPresent(first_pfn(
                        p.nr,
                        sec.present() & p.mask,
                    )));
                }
            }
        }
        Ok(())
    }

    /// Gives section `nr` a table chunk and a mem_map if it lacks them. A new mem_map is
    /// initialised in one pass: pages in `adding` (the range this call makes present) as
    /// `fill`, every other page as a hole. Returns whether it created one.
    fn add_section_meta(
        &mut self,
        nr: SectionNr,
        node: NodeId,
        adding: PfnRange,
        fill: Page,
    ) -> Result<bool, Error> {
        let Some(meta) = self.alloc_section_meta(nr, node)? else {
            return Ok(false);
        };
        let lo = adding.start.index_in_section();
        let hi = lo + adding.nr_pages() as usize;
        let hole = Page::init(nr, node, PageFlags::HOLE);
        let offline = fill;
        let whole = lo == 0 && hi == PAGES_PER_SECTION as usize;
        let mut map = self
            .store
            .map_filled::<Page>(meta, if whole { offline } else { hole });
        if !whole {
            map[lo..hi].fill(offline);
        }
        match self.buddy.table.get_mut(nr) {
            Some(sec) => sec.set_mem_map(map, node, false),
            None => unreachable!("chunk installed above"),
        }
        Ok(true)
    }

    /// The section of piece `p`, if every subsection of `p` is present and none is online.
    fn present_offline(&self, p: &Piece) -> Result<&Section, Error> {
        let sec = self
            .buddy
            .table
            .get(p.nr)
            .ok_or(Error::NotPresent(p.range.start))?;
        let missing = p.mask & !sec.present();
        if missing != 0 {
            return Err(Error::NotPresent(first_pfn(p.nr, missing)));
        }
        if sec.online() & p.mask != 0 {
            return Err(Error::AlreadyOnline(first_pfn(p.nr, sec.online() & p.mask)));
        }
        Ok(sec)
    }

    /// Puts the present, offline, 2 MiB-aligned `range` online into `zone` of each
    /// page's node; its pages become free.
    pub fn online_range(&mut self, range: PfnRange, zone: ZoneType) -> Result<(), Error> {
        self.online_range_as(range, zone, Online::Allocatable)
    }

    /// [`Mm::online_range`] with `online` saying whether the pages go online isolated.
    pub(super) fn online_range_as(
        &mut self,
        range: PfnRange,
        zone: ZoneType,
        online: Online,
    ) -> Result<(), Error> {
        self.check_online(range, zone)?;
        for p in pieces(range) {
            self.online_piece(&p, zone, None, online);
        }
        Ok(())
    }

    /// What [`Mm::online_range`] checks: present, offline, no other zone in its sections.
    pub(super) fn check_online(&self, range: PfnRange, zone: ZoneType) -> Result<(), Error> {
        self.check_range(range)?;
        for p in pieces(range) {
            let sec = self.present_offline(&p)?;
            if sec.zone().is_some_and(|z| z != zone) {
                return Err(Error::ZoneConflict(p.nr));
            }
        }
        Ok(())
    }

    /// Puts the validated, present, offline piece `p` online into `zone`, its pageblocks of
    /// the zone's migrate type or isolated (`online`). Without `fresh` every descriptor is
    /// rewritten from a template (flags clear, zone set, no references, no owner, unlinked).
    /// `fresh = Some(node)` says the caller just wrote them so, all on `node`
    /// (`add_online_range`), and skips the pass.
    fn online_piece(&mut self, p: &Piece, zone: ZoneType, fresh: Option<NodeId>, online: Online) {
        let mt = match online {
            Online::Allocatable => zone.default_migrate_type(),
            Online::Isolated => MigrateType::Isolate,
        };
        let Some(sec) = self.buddy.table.get_mut(p.nr) else {
            return;
        };
        sec.set_online(sec.online() | p.mask);
        sec.set_zone(Some(zone));
        for i in 0..64 {
            if p.mask & (1 << i) != 0 {
                sec.set_migrate_type(i, mt);
            }
        }
        let mut per_node = [0u64; MAX_NODES];
        // Descriptor pages of unit maps, per node: present, never managed or free.
        let mut meta_node = [0u64; MAX_NODES];
        let nr = p.nr;
        if let Some(node) = fresh {
            per_node[node.index()] = p.range.nr_pages();
            meta_node[node.index()] = self.unit_meta_in(p.range);
        } else {
            let mut cached: Option<(NodeId, Page)> = None;
            self.buddy.table.for_each_page_mut(p.range, |_, pg| {
                let node = pg.node();
                per_node[node.index()] += 1;
                if pg.flags().contains(PageFlags::MEMMAP) {
                    // In an offline range only a unit's own descriptors carry MEMMAP.
                    pg.set_zone(zone);
                    meta_node[node.index()] += 1;
                    return;
                }
                let t = match cached {
                    Some((n, t)) if n == node => t,
                    _ => {
                        let t = template(nr, node, Some(zone));
                        cached = Some((node, t));
                        t
                    }
                };
                *pg = t;
            });
        }
        for ((nd, n), m) in self.buddy.nodes.iter_mut().zip(per_node).zip(meta_node) {
            nd.offline_pages -= n - m;
            nd.zones[zone.index()].present_pages += n;
            nd.zones[zone.index()].managed_pages += n - m;
        }
        self.free_online(p.range);
    }

    /// Walks the pageblocks of a validated range, checking each with `f`.
    fn each_pageblock(
        &self,
        range: PfnRange,
        mut f: impl FnMut(Pfn, MigrateType) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut pb = range.start;
        while pb.0 < range.end_exclusive.0 {
            if !self.buddy.table.pfn_online(pb) {
                return Err(Error::NotOnline(pb));
            }
            f(pb, self.buddy.table.migrate_type(pb))?;
            pb = pb.add(PAGES_PER_PAGEBLOCK);
        }
        Ok(())
    }

    /// What [`Mm::isolate_range`] checks: every pageblock online and not isolated.
    pub(super) fn check_isolate(&self, range: PfnRange) -> Result<(), Error> {
        self.check_range(range)?;
        self.each_pageblock(range, |pb, mt| match mt {
            MigrateType::Isolate => Err(Error::AlreadyIsolated(pb)),
            _ => Ok(()),
        })
    }

    /// What [`Mm::unisolate_range`] checks: every pageblock online and isolated.
    pub(super) fn check_unisolate(&self, range: PfnRange) -> Result<(), Error> {
        self.check_range(range)?;
        self.each_pageblock(range, |pb, mt| match mt {
            MigrateType::Isolate => Ok(()),
            _ => Err(Error::NotIsolated(pb)),
        })
    }

    /// Isolates every pageblock of the online, 2 MiB-aligned `range`: its free pages leave
    /// the allocatable lists and pages freed there stay isolated.
    pub fn isolate_range(&mut self, range: PfnRange) -> Result<(), Error> {
        self.check_isolate(range)?;
        let mut pb = range.start;
        while pb.0 < range.end_exclusive.0 {
            self.buddy.isolate_pageblock(pb);
            pb = pb.add(PAGES_PER_PAGEBLOCK);
        }
        Ok(())
    }

    /// Undoes [`Mm::isolate_range`]: every pageblock of `range` must be isolated; they get
    /// their zone's migrate type back and their free pages merge again.
    pub fn unisolate_range(&mut self, range: PfnRange) -> Result<(), Error> {
        self.check_unisolate(range)?;
        let mut pb = range.start;
        while pb.0 < range.end_exclusive.0 {
            let zone = self
                .buddy
                .table
                .get(pb.section())
                .and_then(|s| s.zone())
                .unwrap_or(ZoneType::Normal);
            self.buddy
                .unisolate_pageblock(pb, zone.default_migrate_type());
            pb = pb.add(PAGES_PER_PAGEBLOCK);
        }
        Ok(())
    }

    /// Takes the isolated, entirely free, 2 MiB-aligned `range` out of its zone
    /// (online -> offline).
    pub fn offline_range(&mut self, range: PfnRange) -> Result<(), Error> {
        self.check_offline(range)?;
        for p in pieces(range) {
            let mut pb = p.range.start;
            while pb.0 < p.range.end_exclusive.0 {
                self.buddy.pageblock_take_free(pb);
                pb = pb.add(PAGES_PER_PAGEBLOCK);
            }
            let Some(sec) = self.buddy.table.get_mut(p.nr) else {
                continue;
            };
            let zone = sec.zone().unwrap_or(ZoneType::Normal);
            sec.set_online(sec.online() & !p.mask);
            if sec.online() == 0 {
                sec.set_zone(None);
            }
            for i in 0..64 {
                if p.mask & (1 << i) != 0 {
                    sec.set_migrate_type(i, MigrateType::Unmovable);
                }
            }
            let mut per_node = [0u64; MAX_NODES];
            let mut meta_node = [0u64; MAX_NODES];
            self.buddy.table.for_each_page_mut(p.range, |_, pg| {
                per_node[pg.node().index()] += 1;
                // Isolated and free: the only MEMMAP pages are a unit's own descriptors.
                if pg.flags().contains(PageFlags::MEMMAP) {
                    meta_node[pg.node().index()] += 1;
                } else {
                    pg.set_flags(PageFlags::OFFLINE);
                }
            });
            for ((nd, n), m) in self.buddy.nodes.iter_mut().zip(per_node).zip(meta_node) {
                nd.offline_pages += n - m;
                nd.zones[zone.index()].present_pages -= n;
                nd.zones[zone.index()].managed_pages -= n - m;
            }
        }
        Ok(())
    }

    /// What [`Mm::offline_range`] checks: every pageblock online, isolated and free.
    pub(super) fn check_offline(&self, range: PfnRange) -> Result<(), Error> {
        self.check_range(range)?;
        self.each_pageblock(range, |pb, mt| {
            if mt != MigrateType::Isolate {
                return Err(Error::NotIsolated(pb));
            }
            match self.buddy.pageblock_first_busy(pb) {
                Some(busy) => Err(Error::Busy(busy)),
                None => Ok(()),
            }
        })
    }

    /// What [`Mm::remove_sections`] checks: present and offline.
    pub(super) fn check_remove(&self, range: PfnRange) -> Result<(), Error> {
        self.check_range(range)?;
        for p in pieces(range) {
            self.present_offline(&p)?;
        }
        Ok(())
    }

    /// Makes the present, offline, 2 MiB-aligned `range` absent. A run-time section whose
    /// last subsection goes loses its mem_map (released to the store, then freed); a unit
    /// with its own descriptors releases them; an empty run-time chunk (and unit table)
    /// is freed.
    pub fn remove_sections(&mut self, range: PfnRange) -> Result<(), Error> {
        self.check_remove(range)?;
        for p in pieces(range) {
            let Some(sec) = self.buddy.table.get_mut(p.nr) else {
                continue;
            };
            let node = sec.node();
            let nr = p.nr;
            if sec.has_mem_map() {
                sec.set_present(sec.present() & !p.mask);
                let mut per_node = [0u64; MAX_NODES];
                self.buddy.table.for_each_page_mut(p.range, |_, pg| {
                    per_node[pg.node().index()] += 1;
                    *pg = Page::init(nr, node, PageFlags::HOLE);
                });
                for (nd, n) in self.buddy.nodes.iter_mut().zip(per_node) {
                    nd.offline_pages -= n;
                }
            } else {
                // Per-unit descriptors, all on the section's node: the counts come from the
                // unit table, not from the descriptors (never read once the range goes).
                let meta = self.unit_meta_in(p.range);
                let nd = &mut self.buddy.nodes[node.index()];
                nd.offline_pages -= p.range.nr_pages() - meta;
                nd.mem_map_pages -= meta;
                // Descriptors first, presence after: a unit leaves with its descriptors.
                self.remove_unit_maps(p.range);
                if let Some(sec) = self.buddy.table.get_mut(nr) {
                    sec.set_present(sec.present() & !p.mask);
                }
            }
            self.release_section_meta(nr);
        }
        Ok(())
    }
}
