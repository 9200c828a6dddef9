//! Page references and pins: [`Mm::get_page`], [`Mm::put_page`], [`Mm::is_pinned`], and
//! the freeze / finish / abort steps the migration engine ([`super::migrate`]) uses.
//!
//! Model: the head descriptor of every allocation has a reference count
//! ([`Page::refcount`](super::Page::refcount)). It counts:
//! - the allocation's own reference: 1 from `alloc_pages`, held by whoever allocated the
//!   page and dropped with its last `put_page` (or `free_pages` while it is the only one);
//! - one reference per page-table mapping of a movable page: the kernel takes it with
//!   `get_page` when it adds the mapping to the reverse map ([`super::rmap`]) and drops it
//!   with `put_page` when it removes the mapping;
//! - one per extra holder: a pin (in-flight DMA, `pin` in the shell).
//!
//! The map count of a page is its number of reverse-map entries
//! ([`Rmap::map_count`](super::Rmap::map_count)); the descriptor has no room for it.
//!
//! **Pinned**: `refcount > map_count + 1`, i.e. a reference beyond the mappings and the
//! allocation's own. A pinned page never migrates (a device may write it at any time).
//! A page whose owner already dropped its reference (`refcount == map_count`) is not pinned.
//!
//! States of an allocated head: *in use* (`refcount > 0`, no `MIGRATING`) and *migrating*
//! (`MIGRATING` set, between the engine's freeze and finish/abort). While migrating,
//! `get_page` is refused with [`Error::Migrating`] (a new pin could let a device write the
//! old copy while it is being copied) and the page can't be freed; `put_page` that does
//! not free still works.
//!
//! Invariant kept by the kernel: every reverse-map entry holds a reference, so a mapped
//! page is never freed (`refcount >= map_count`; [`Rmap::check`](super::Rmap::check)).
//!
//! Locks: `&mut Mm`, under the kernel's `Mm` lock. The pin test needs the map count from
//! the reverse map, read under the rmap lock, which is taken first.
#![forbid(unsafe_code)]

use super::model::Mm;
use super::page::{Page, PageFlags};
use super::store::MemMapStore;
use super::types::Pfn;
use super::{AllocFlags, Error};

/// Flags that make a page not an ordinary allocation.
const NOT_ALLOCATED: PageFlags = PageFlags::BUDDY
    .union(PageFlags::RESERVED)
    .union(PageFlags::OFFLINE)
    .union(PageFlags::HOLE)
    .union(PageFlags::MEMMAP)
    .union(PageFlags::PENDING);

impl<S: MemMapStore> Mm<S> {
    /// The descriptor of the allocated head `pfn`, or [`Error::NotAllocated`].
    pub(crate) fn allocated_head(&self, pfn: Pfn) -> Result<&Page, Error> {
        if !self.buddy.table.pfn_online(pfn) {
            return Err(Error::NotAllocated(pfn));
        }
        let p = self.buddy.table.pg(pfn);
        if p.flags().intersects(NOT_ALLOCATED) || p.refcount() == 0 {
            return Err(Error::NotAllocated(pfn));
        }
        Ok(p)
    }

    /// The reference count of the allocated head `pfn`.
    pub fn page_refcount(&self, pfn: Pfn) -> Result<u32, Error> {
        Ok(self.allocated_head(pfn)?.refcount())
    }

    /// Whether the allocated head `pfn` is frozen for migration.
    pub fn page_migrating(&self, pfn: Pfn) -> Result<bool, Error> {
        Ok(self
            .allocated_head(pfn)?
            .flags()
            .contains(PageFlags::MIGRATING))
    }

    /// Takes a reference on the allocated head `pfn`; returns the new count. Refused
    /// while the page is migrating ([`Error::Migrating`]).
    pub fn get_page(&mut self, pfn: Pfn) -> Result<u32, Error> {
        let p = self.allocated_head(pfn)?;
        if p.flags().contains(PageFlags::MIGRATING) {
            return Err(Error::Migrating(pfn));
        }
        let count = p.refcount().checked_add(1).ok_or(Error::RefOverflow(pfn))?;
        self.buddy.table.pg_mut(pfn).set_refcount(count);
        Ok(count)
    }

    /// Drops a reference on the allocated head `pfn`; the last one frees the allocation
    /// (of the order it was allocated with) and returns `true`. The last reference of a
    /// migrating page can't be dropped ([`Error::Migrating`]; it can't happen while the
    /// kernel keeps one reference per mapping).
    pub fn put_page(&mut self, pfn: Pfn) -> Result<bool, Error> {
        let p = self.allocated_head(pfn)?;
        let (count, order) = (p.refcount(), p.order());
        if count > 1 {
            self.buddy.table.pg_mut(pfn).set_refcount(count - 1);
            return Ok(false);
        }
        if p.flags().contains(PageFlags::MIGRATING) {
            return Err(Error::Migrating(pfn));
        }
        self.buddy.free(pfn, order)?;
        Ok(true)
    }

    /// Whether the allocated head `pfn`, mapped `map_count` times (from the reverse map),
    /// holds a reference beyond its mappings and its allocation's own.
    pub fn is_pinned(&self, pfn: Pfn, map_count: u32) -> Result<bool, Error> {
        let count = self.allocated_head(pfn)?.refcount();
        Ok(u64::from(count) > u64::from(map_count) + 1)
    }

    /// Migration step 1: checks that `old` is an unpinned, order-0 page mapped
    /// `map_count` times and allocates its destination (movable, on `old`'s node first).
    pub(crate) fn migrate_prepare(&mut self, old: Pfn, map_count: u32) -> Result<Pfn, Prepare> {
        let p = self.allocated_head(old).map_err(|_| Prepare::Unmovable)?;
        if p.order() != 0 || p.flags().contains(PageFlags::MIGRATING) {
            return Err(Prepare::Unmovable);
        }
        if u64::from(p.refcount()) > u64::from(map_count) + 1 {
            return Err(Prepare::Pinned);
        }
        let node = p.node();
        self.alloc_pages(0, AllocFlags::MOVABLE.on_node(node))
            .map_err(|_| Prepare::NoMemory)
    }

    /// Migration step 2, after every mapping of `old` is a migration entry and flushed:
    /// freezes `old` unless a pin arrived meanwhile (then `false`).
    pub(crate) fn migrate_freeze(&mut self, old: Pfn, map_count: u32) -> bool {
        let p = self.buddy.table.pg_mut(old);
        if u64::from(p.refcount()) > u64::from(map_count) + 1 {
            return false;
        }
        p.insert_flags(PageFlags::MIGRATING);
        true
    }

    /// Migration step 3, after the copy and the new mappings: `new` takes over `old`'s
    /// references (minus the one `old` keeps for freeing) and its owner word, then `old`
    /// is freed (into its isolated pageblock).
    pub(crate) fn migrate_finish(&mut self, old: Pfn, new: Pfn) {
        let (refs, owner) = {
            let p = self.buddy.table.pg_mut(old);
            p.remove_flags(PageFlags::MIGRATING);
            let r = (p.refcount(), p.owner());
            p.set_refcount(1);
            r
        };
        let n = self.buddy.table.pg_mut(new);
        // `new` came with refcount 1 and may have gained references since its mappings
        // went live; `old`'s count replaces the allocation reference it came with.
        n.set_refcount(n.refcount() - 1 + refs);
        n.set_owner(owner);
        if let Err(e) = self.buddy.free(old, 0) {
            panic!("mm: freeing migrated {old:?} failed: {e}");
        }
    }

    /// Undoes [`Mm::migrate_prepare`] (and a freeze, if any): frees `new`, unfreezes `old`.
    pub(crate) fn migrate_abort(&mut self, old: Pfn, new: Pfn) {
        self.buddy
            .table
            .pg_mut(old)
            .remove_flags(PageFlags::MIGRATING);
        if let Err(e) = self.buddy.free(new, 0) {
            panic!("mm: freeing unused migration target {new:?} failed: {e}");
        }
    }
}

/// Why [`Mm::migrate_prepare`] refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Prepare {
    Pinned,
    Unmovable,
    NoMemory,
}
