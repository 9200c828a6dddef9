//! The reverse map: from each mapped movable page to every (address space, virtual
//! address) that maps it, so migration can find and rewrite every page-table entry.
//!
//! Model: a sorted map pfn -> mappings. A page mapped once (the usual case: a task's
//! private page) costs one inline entry; more mappings spill into a `Vec`. A page is in
//! the map exactly while it has a mapping; its map count is the number of entries.
//! Addresses are page aligned; one (address space, va) appears at most once per page.
//!
//! Invariants the kernel keeps, checked by [`Rmap::check`]: every page in the map is the
//! allocated order-0 head of a page in online memory, and every entry holds a reference
//! on it (`get_page` with `add`, `put_page` after `remove`), so `refcount >= map_count`
//! and a mapped page is never freed. Every entry matches a present page-table entry for
//! that page, or a migration entry while the page is migrating.
//!
//! Memory: entries live on the kernel heap, not in `Mm`'s pages. That is why the rmap is a
//! separate object with its own lock instead of a part of `Mm`: the heap takes pages from
//! `Mm`, so nothing may allocate from the heap while it holds the `Mm` lock.
//!
//! Locks: the kernel keeps one `Rmap` behind one lock (the rmap lock). It also serialises
//! every change to a page-table entry that maps a movable page: map, unmap and migration
//! hold it while they change the entry and the rmap together. Order: rmap -> page-table
//! locks -> heap -> `Mm`; never the rmap lock while holding the `Mm` or heap lock.
//! Calls that add entries may allocate (from the heap), so they must not run under the
//! `Mm` lock.
#![forbid(unsafe_code)]

use alloc::collections::btree_map::{self, BTreeMap};
use alloc::vec::Vec;
use core::fmt;

use super::check::CheckError;
use super::model::Mm;
use super::store::MemMapStore;
use super::types::{Pfn, PfnRange, PAGE_SIZE};
use super::Error;

/// Address-space id (one per task page table).
pub type AsId = u32;

/// One mapping of a page: the address space and the page-aligned virtual address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Mapping {
    pub as_id: AsId,
    pub va: u64,
}

/// The mappings of one page: never empty; `Many` holds at least two.
#[derive(Clone, Debug)]
enum Entries {
    One(Mapping),
    Many(Vec<Mapping>),
}

impl Entries {
    fn as_slice(&self) -> &[Mapping] {
        match self {
            Entries::One(m) => core::slice::from_ref(m),
            Entries::Many(v) => v,
        }
    }
}

/// The reverse map (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct Rmap {
    pages: BTreeMap<Pfn, Entries>,
    nr_mappings: u64,
}

impl Rmap {
    /// An empty map (const: usable in a `static`).
    pub const fn new() -> Rmap {
        Rmap {
            pages: BTreeMap::new(),
            nr_mappings: 0,
        }
    }

    /// Records that `as_id` maps `pfn` at `va`. The caller also takes a page reference
    /// (`Mm::get_page`) for the mapping. May allocate from the heap.
    pub fn add(&mut self, pfn: Pfn, as_id: AsId, va: u64) -> Result<(), Error> {
        if va % PAGE_SIZE != 0 {
            return Err(Error::BadAddress(va));
        }
        let m = Mapping { as_id, va };
        match self.pages.entry(pfn) {
            btree_map::Entry::Vacant(e) => {
                e.insert(Entries::One(m));
            }
            btree_map::Entry::Occupied(mut e) => {
                let entries = e.get_mut();
                if entries.as_slice().contains(&m) {
                    return Err(Error::AlreadyMapped(pfn));
                }
                match entries {
                    Entries::One(first) => *entries = Entries::Many(alloc::vec![*first, m]),
                    Entries::Many(v) => v.push(m),
                }
            }
        }
        self.nr_mappings += 1;
        Ok(())
    }

    /// Forgets that `as_id` maps `pfn` at `va`. The caller then drops the mapping's
    /// reference (`Mm::put_page`).
    pub fn remove(&mut self, pfn: Pfn, as_id: AsId, va: u64) -> Result<(), Error> {
        let m = Mapping { as_id, va };
        let btree_map::Entry::Occupied(mut e) = self.pages.entry(pfn) else {
            return Err(Error::NotMapped(pfn));
        };
        match e.get_mut() {
            Entries::One(only) if *only == m => {
                e.remove();
            }
            Entries::One(_) => return Err(Error::NotMapped(pfn)),
            Entries::Many(v) => {
                let i = v
                    .iter()
                    .position(|x| *x == m)
                    .ok_or(Error::NotMapped(pfn))?;
                v.swap_remove(i);
                if v.len() == 1 {
                    let last = v[0];
                    *e.get_mut() = Entries::One(last);
                }
            }
        }
        self.nr_mappings -= 1;
        Ok(())
    }

    /// Every mapping of `pfn` (empty when it has none).
    pub fn mappings(&self, pfn: Pfn) -> &[Mapping] {
        self.pages.get(&pfn).map_or(&[], Entries::as_slice)
    }

    /// The map count of `pfn`.
    pub fn map_count(&self, pfn: Pfn) -> u32 {
        self.mappings(pfn).len() as u32
    }

    /// Moves every mapping of `old` to `new` (migration, after the page tables point to
    /// `new`). `new` must have none. May allocate from the heap.
    pub fn move_page(&mut self, old: Pfn, new: Pfn) -> Result<(), Error> {
        if old == new {
            return Ok(());
        }
        if self.pages.contains_key(&new) {
            return Err(Error::AlreadyMapped(new));
        }
        let entries = self.pages.remove(&old).ok_or(Error::NotMapped(old))?;
        self.pages.insert(new, entries);
        Ok(())
    }

    /// Pages with at least one mapping.
    pub fn nr_pages(&self) -> usize {
        self.pages.len()
    }

    /// Mappings over all pages.
    pub fn nr_mappings(&self) -> u64 {
        self.nr_mappings
    }

    /// Every mapped page with its mappings, ascending by pfn.
    pub fn iter(&self) -> impl Iterator<Item = (Pfn, &[Mapping])> + '_ {
        self.pages.iter().map(|(p, e)| (*p, e.as_slice()))
    }

    /// The mapped pages inside `range`, ascending.
    pub fn pages_in(&self, range: PfnRange) -> impl Iterator<Item = (Pfn, &[Mapping])> + '_ {
        self.pages
            .range(range.start..range.end_exclusive.max(range.start))
            .map(|(p, e)| (*p, e.as_slice()))
    }

    /// Checks the invariants of the module doc against `mm` (not the page tables, which
    /// only the kernel sees): each mapped page is an allocated order-0 head whose
    /// reference count covers its mappings; counts add up; no duplicate entries.
    pub fn check<S: MemMapStore>(&self, mm: &Mm<S>) -> Result<(), CheckError> {
        let fail = |reason: fmt::Arguments| Err(CheckError::new(reason));
        let mut total = 0u64;
        for (pfn, maps) in self.iter() {
            total += maps.len() as u64;
            let Ok(p) = mm.allocated_head(pfn) else {
                return fail(format_args!("rmap: {pfn} is mapped but not allocated"));
            };
            if p.order() != 0 {
                return fail(format_args!(
                    "rmap: {pfn} is mapped but has order {}",
                    p.order()
                ));
            }
            if u64::from(p.refcount()) < maps.len() as u64 {
                return fail(format_args!(
                    "rmap: {pfn} has {} mappings but refcount {}",
                    maps.len(),
                    p.refcount()
                ));
            }
            for (i, m) in maps.iter().enumerate() {
                if m.va % PAGE_SIZE != 0 || maps[..i].contains(m) {
                    return fail(format_args!("rmap: {pfn}: bad or duplicate entry {m:?}"));
                }
            }
        }
        if total != self.nr_mappings {
            return fail(format_args!(
                "rmap: {} mappings counted, {total} found",
                self.nr_mappings
            ));
        }
        Ok(())
    }
}
