//! The migration engine: [`migrate_range`] empties an isolated pfn range by moving every
//! movable page out of it, and reports what could not move and why
//! ([`MigrateReport`]), so the unplug policy can retry later or say `pinned`,
//! `unmovable` or `no_memory`. [`Mm::used_pages_in`] helps choose victims.
//!
//! # Model
//! A movable page is an order-0 allocation mapped into task address spaces and listed in
//! the reverse map ([`super::rmap`]); nothing else reaches it, so it can be copied to
//! another page once every mapping is switched. The engine reaches page tables, page
//! contents and sleeping tasks only through [`PageTables`], the `Mm` through [`MmLock`]
//! and the reverse map through [`RmapLock`]; the kernel implements them over its
//! `AddressSpace`s, its linear map, its scheduler and its locks, host tests with fakes.
//!
//! Outcome per used page of the range:
//! - free pages are skipped;
//! - moved: an order-0 allocated page with at least one mapping and no pin;
//! - [`MigrateFailure::Pinned`]: it holds references beyond its mappings and its
//!   allocation's own (see [`super::refs`]), before the move or arriving during it;
//! - [`MigrateFailure::Unmovable`]: anything else in use: kernel allocations, larger
//!   allocations, reserved pages and mem_maps, and movable pages not (yet) mapped;
//! - [`MigrateFailure::NoMemory`]: no free page outside the range to move it to.
//!
//! # Moving a batch of pages
//! Pages move in batches of up to [`MIGRATE_BATCH`], each step done for the whole batch
//! before the next, so one TLB broadcast serves the batch (under QEMU's TCG every
//! broadcast invalidation stops all vCPUs: one per page made it the main cost of a
//! migration). The rmap lock is held only for the steps that read or change the reverse
//! map or turn entries from present to migrating and back: short holds of at most
//! [`HOLD_PAGES`] pages each for steps 1-2 and for steps 6-7, none across the TLB flush or
//! the copies. For each page `old`:
//! 1. Rmap lock (first hold) and `Mm` lock: `old` must be unpinned; allocate `new`
//!    (movable, `old`'s node first). The range is isolated, and isolated pageblocks are
//!    never allocated from, so `new` is outside it (asserted).
//! 2. Still in the first hold: for every mapping, replace the entry with
//!    [`Pte::Migrating`]. Then the rmap lock is released.
//! 3. No lock: one flush of all the batch's entries (TLB invalidation broadcast to all
//!    CPUs, completed before `flush` returns).
//! 4. `Mm` lock: freeze `old` unless a pin arrived since step 1 (then put its mappings
//!    back and fail it with `Pinned`). Frozen, `get_page` on it is refused.
//! 5. No lock: copy `old` to `new`.
//! 6. Rmap lock (second hold): for every mapping, install `Present(new)` with the old
//!    permission (an invalid -> valid change needs no TLB flush, only the barrier
//!    `replace` already issues).
//! 7. Still in the second hold: move the reverse-map entries; `Mm` lock: `new` takes
//!    `old`'s references, `old` is freed (it lands on its isolated pageblock's free list).
//! 8. After the rmap lock is dropped: wake the tasks that waited on a migration entry
//!    (once per batch).
//!
//! The scan for the next used page also runs in bounded holds of the `Mm` lock: at most
//! [`SCAN_BLOCKS`] blocks per hold, so an empty stretch of a large range is not walked
//! under one hold.
//!
//! # Concurrency contract for the kernel
//! - The `Mm` lock is held only inside steps 1, 4 and 7 and the bounded scan; the rmap
//!   lock only in the holds of steps 1-2 and 6-7, each O([`HOLD_PAGES`] × their
//!   mappings), never across a copy, a TLB flush or more than one batch. Between the holds
//!   of steps 1-2, the pages already turned are the engine's (below), the rest untouched.
//! - Between the two holds the engine owns the batch's migration entries: only it rewrites
//!   them (step 4's put-back or step 6). Everyone else who finds one waits instead of
//!   changing it: a task touching the page takes a translation fault, and an unmap or a
//!   page-table teardown of the mapping (which finds the entry under the rmap lock) drops
//!   the rmap lock; both sleep on the migration wait queue until the entry is no longer
//!   `Migrating` (re-checked after each wake-up), then retry. Neither may hold the rmap
//!   lock while it waits. A map never targets an entry that is not empty, and a pin looks
//!   pages up through present entries only, so neither touches a migration entry. The
//!   reverse map is therefore unchanged for the batch's pages between the holds, and the
//!   mappings the first hold read are the ones the second hold rewrites.
//! - No write is lost: the copy (5) starts only after every entry is invalid *and* every
//!   CPU's TLB entries for it are gone (3), so no CPU can write `old` during or after the
//!   copy; a DMA writer would hold a pin, which step 4 rejects and `get_page` can't take
//!   while frozen. Copying before the flush would let a CPU with a stale TLB entry write
//!   `old` after its bytes were copied. The copy needs no lock: `old` is frozen and
//!   unreachable, `new` is the engine's own allocation, reachable by nobody until step 6.
//! - `old` may be freed only after no page-table entry and no TLB entry can reach it: the
//!   migration entries still name it until step 6 rewrites them, and a waiter re-reads
//!   the entry after waking. So it is freed in step 7, after every new entry is in place.
//!   Waking (8) comes after, so a waiter always finds the new entry (or, after step 4's
//!   put-back, the old one).
//! - Map, unmap and page-table teardown of movable pages take the rmap lock, so they
//!   never see a page whose entries are half rewritten: steps 2 and 6-7 each run in one
//!   hold.
//!
//! # Locks
//! Order: rmap -> page tables (inside [`PageTables`]) -> heap -> `Mm`. `migrate_range`
//! takes each lock through its trait for one step at a time; the caller holds none.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use arrayvec::ArrayVec;
use core::fmt;

pub use super::model::MmLock;

use super::model::Mm;
use super::page::{MigrateType, PageFlags};
use super::refs::Prepare;
use super::rmap::{AsId, Mapping, Rmap};
use super::store::MemMapStore;
use super::types::{
    Pfn, PfnRange, MAX_ORDER, PAGES_PER_PAGEBLOCK, PAGE_SHIFT, PAGE_SIZE, SECTION_SHIFT,
};
use super::Error;

/// A page-table entry as the engine sees it; the kernel maps it to real descriptors.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pte {
    /// Nothing mapped.
    None,
    /// A valid mapping of `pfn`.
    Present { pfn: Pfn, writable: bool },
    /// An invalid descriptor naming the page under migration (and the permission to
    /// restore); a task touching it faults and sleeps until the migration is done.
    Migrating { pfn: Pfn, writable: bool },
}

/// What the engine needs from the kernel's address spaces, memory and scheduler.
pub trait PageTables {
    /// The current entry for `va` in address space `as_id`.
    fn entry(&self, as_id: AsId, va: u64) -> Pte;
    /// Writes `new` for `va` in `as_id` (with the barriers that make it visible to the
    /// table walkers) and returns the previous entry. Does not flush the TLB.
    fn replace(&mut self, as_id: AsId, va: u64, new: Pte) -> Pte;
    /// Reads the entry for `va` in `as_id` and, if `f` gives a new one for it, writes that
    /// (as [`PageTables::replace`] does), walking the tables once; returns the entry that
    /// was there, which `f` saw. The default does it with `entry` and `replace`.
    fn update(&mut self, as_id: AsId, va: u64, f: &mut dyn FnMut(Pte) -> Option<Pte>) -> Pte {
        let old = self.entry(as_id, va);
        if let Some(new) = f(old) {
            self.replace(as_id, va, new);
        }
        old
    }
    /// Invalidates the translations of every `(as_id, va)` in `maps` in the TLBs of all
    /// CPUs and waits for completion (it may invalidate more, e.g. a whole ASID).
    fn flush(&mut self, maps: &[Mapping]);
    /// Copies the 4 KiB page `from` to `to`.
    fn copy_page(&mut self, from: Pfn, to: Pfn);
    /// Wakes every task sleeping on a migration entry (they re-check their entry).
    fn wake_waiters(&mut self);
    /// A monotonic clock in ns for the engine's profile ([`MigrateProfile`]); 0 (the
    /// default) when there is none: only the counts move.
    fn now_ns(&self) -> u64 {
        0
    }
}

/// Runs code under the kernel's rmap lock. A plain `Rmap` implements it (no lock).
pub trait RmapLock {
    /// Calls `f` with the lock held.
    fn with_rmap<T>(&mut self, f: impl FnOnce(&mut Rmap) -> T) -> T;
}

impl RmapLock for Rmap {
    fn with_rmap<T>(&mut self, f: impl FnOnce(&mut Rmap) -> T) -> T {
        f(self)
    }
}

/// Why a used page of the range did not move.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum MigrateFailure {
    /// References beyond its mappings (in-flight DMA): retry after they are dropped.
    Pinned,
    /// Not a mapped order-0 movable page (kernel memory, reserved, not mapped yet).
    Unmovable,
    /// No free page outside the range to move it to.
    NoMemory,
}

impl MigrateFailure {
    /// The word `vmem` shows as the stall reason.
    pub const fn name(self) -> &'static str {
        match self {
            MigrateFailure::Pinned => "pinned",
            MigrateFailure::Unmovable => "unmovable",
            MigrateFailure::NoMemory => "no_memory",
        }
    }
}

display_by_name!(MigrateFailure);

/// What [`migrate_range`] did. Failure counts are in pages.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MigrateReport {
    pub moved_pages: u64,
    pub bytes_copied: u64,
    pub pinned_pages: u64,
    pub unmovable_pages: u64,
    pub no_memory_pages: u64,
    /// The lowest page that did not move, and why.
    pub first_failure: Option<(Pfn, MigrateFailure)>,
    /// Where the time went.
    pub profile: MigrateProfile,
}

/// A step of the engine, for its profile.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Step {
    /// Finding used pages (the bounded scan).
    Scan,
    /// Step 1: pin check and destination allocation.
    Alloc,
    /// Step 2: present entries to migration entries.
    Unmap,
    /// Step 3: the batch's TLB flush.
    Flush,
    /// Step 4: freezing the old pages.
    Freeze,
    /// Step 5: copying.
    Copy,
    /// Step 6: the new entries.
    Remap,
    /// Step 7: reverse map, references, freeing the old pages.
    Rmap,
}

impl Step {
    /// The step's name in profiles.
    pub const fn name(self) -> &'static str {
        match self {
            Step::Scan => "scan",
            Step::Alloc => "alloc",
            Step::Unmap => "unmap",
            Step::Flush => "flush",
            Step::Freeze => "freeze",
            Step::Copy => "copy",
            Step::Remap => "remap",
            Step::Rmap => "rmap",
        }
    }

    /// Every step, in [`MigrateProfile::steps`] order.
    pub const ALL: [Step; 8] = [
        Step::Scan,
        Step::Alloc,
        Step::Unmap,
        Step::Flush,
        Step::Freeze,
        Step::Copy,
        Step::Remap,
        Step::Rmap,
    ];
}

/// Per step of the engine: how often it ran, the time it took (ns, from
/// [`PageTables::now_ns`]) and the pages it handled.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MigrateProfile {
    /// `(calls, ns, pages)` per step, in [`Step::ALL`] order.
    pub steps: [(u64, u64, u64); 8],
}

impl MigrateProfile {
    fn add(&mut self, step: Step, t0: u64, t1: u64, pages: usize) {
        let s = &mut self.steps[step as usize];
        s.0 += 1;
        s.1 += t1.saturating_sub(t0);
        s.2 += pages as u64;
    }

    /// Adds `other` to this profile.
    pub fn merge(&mut self, other: &MigrateProfile) {
        for (a, b) in self.steps.iter_mut().zip(&other.steps) {
            a.0 += b.0;
            a.1 += b.1;
            a.2 += b.2;
        }
    }
}

impl MigrateReport {
    /// Pages that did not move.
    pub fn failed_pages(&self) -> u64 {
        self.pinned_pages + self.unmovable_pages + self.no_memory_pages
    }

    /// Whether every used page moved (the range is now free, unless something is still
    /// being freed by its owner).
    pub fn is_complete(&self) -> bool {
        self.failed_pages() == 0
    }

    /// The failure with the most pages (ties: unmovable, pinned, no_memory), for a
    /// single stall reason.
    pub fn main_failure(&self) -> Option<MigrateFailure> {
        [
            (self.unmovable_pages, MigrateFailure::Unmovable),
            (self.pinned_pages, MigrateFailure::Pinned),
            (self.no_memory_pages, MigrateFailure::NoMemory),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .fold(
            None,
            |best: Option<(u64, MigrateFailure)>, (n, c)| match best {
                Some((b, _)) if b >= n => best,
                _ => Some((n, c)),
            },
        )
        .map(|(_, c)| c)
    }

    /// Adds `other` (a later range) to this report.
    pub fn merge(&mut self, other: &MigrateReport) {
        self.moved_pages += other.moved_pages;
        self.bytes_copied += other.bytes_copied;
        self.pinned_pages += other.pinned_pages;
        self.unmovable_pages += other.unmovable_pages;
        self.no_memory_pages += other.no_memory_pages;
        self.profile.merge(&other.profile);
        if let Some((pfn, cause)) = other.first_failure {
            if self.first_failure.is_none_or(|(first, _)| pfn < first) {
                self.first_failure = Some((pfn, cause));
            }
        }
    }

    fn fail(&mut self, pfn: Pfn, cause: MigrateFailure, nr_pages: u64) {
        match cause {
            MigrateFailure::Pinned => self.pinned_pages += nr_pages,
            MigrateFailure::Unmovable => self.unmovable_pages += nr_pages,
            MigrateFailure::NoMemory => self.no_memory_pages += nr_pages,
        }
        if self.first_failure.is_none_or(|(first, _)| pfn < first) {
            self.first_failure = Some((pfn, cause));
        }
    }
}

impl fmt::Display for MigrateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "moved={} copied={}KiB pinned={} unmovable={} no_memory={}",
            self.moved_pages,
            self.bytes_copied / 1024,
            self.pinned_pages,
            self.unmovable_pages,
            self.no_memory_pages
        )?;
        if let Some((pfn, cause)) = self.first_failure {
            write!(f, " first={pfn} ({cause})")?;
        }
        Ok(())
    }
}

/// What one bounded hold of the scan found.
enum Scan {
    /// A used page.
    Used(Used),
    /// Only free blocks up to this pfn; scan on from there.
    Free(Pfn),
    /// Nothing used up to the end of the range.
    Done,
}

/// Most free blocks the scan for the next used page steps over under one hold of the `Mm`
/// lock (each step a few descriptor reads).
pub const SCAN_BLOCKS: usize = 512;

/// A used page found by the scan: its first pfn, its size in pages, and whether it may
/// be a movable page (an order-0 allocated head).
struct Used {
    pfn: Pfn,
    nr_pages: u64,
    candidate: bool,
}

impl<S: MemMapStore> Mm<S> {
    /// Pages of `range` (any alignment) that are online and in use: allocated, reserved,
    /// or holding mem_maps. Holes and offline pages don't count.
    pub fn used_pages_in(&self, range: PfnRange) -> u64 {
        let mut used = 0;
        let mut pfn = Pfn(range.start.0 & !((1 << MAX_ORDER) - 1));
        let t = &self.buddy.table;
        while pfn.0 < range.end_exclusive.0 {
            let Some(p) = t.page(pfn) else {
                pfn = Pfn((pfn.section().0 + 1) << (SECTION_SHIFT - PAGE_SHIFT));
                continue;
            };
            if !t.pfn_online(pfn) {
                pfn = pfn.add(1);
                continue;
            }
            if p.is_buddy() {
                pfn = pfn.add(1 << p.order());
                continue;
            }
            if range.contains(pfn) && !p.flags().contains(PageFlags::HOLE) && !t.is_unit_meta(pfn) {
                used += 1;
            }
            pfn = pfn.add(1);
        }
        used
    }

    /// Checks that `range` is a non-empty, pageblock-aligned range of isolated pageblocks.
    fn check_isolated(&self, range: PfnRange) -> Result<(), Error> {
        self.check_bounds(range, PAGES_PER_PAGEBLOCK)?;
        let mut pb = range.start;
        while pb.0 < range.end_exclusive.0 {
            if !self.buddy.table.pfn_online(pb) {
                return Err(Error::NotOnline(pb));
            }
            if self.buddy.table.migrate_type(pb) != MigrateType::Isolate {
                return Err(Error::NotIsolated(pb));
            }
            pb = pb.add(PAGES_PER_PAGEBLOCK);
        }
        Ok(())
    }

    /// The free block or allocation covering `pfn`, if any: (first pfn, order, free).
    /// A pfn that none covers is a reserved, mem_map or hole page.
    fn block_at(&self, pfn: Pfn) -> Option<(Pfn, u32, bool)> {
        let t = &self.buddy.table;
        (0..=MAX_ORDER).find_map(|o| {
            let head = Pfn(pfn.0 & !((1u64 << o) - 1));
            let p = t.pg(head);
            if p.order() < o {
                return None;
            }
            if p.is_buddy() {
                Some((head, p.order(), true))
            } else if self.allocated_head(head).is_ok() {
                Some((head, p.order(), false))
            } else {
                None
            }
        })
    }

    /// The first used page at or after `from` and before `end` (inside one checked range),
    /// looking at most at [`SCAN_BLOCKS`] free blocks: [`Scan::Free`] says where to go on
    /// when the blocks seen were all free. Free blocks may start before `from` (pages
    /// freed and merged while the engine worked), so the walk looks up the block covering
    /// each pfn.
    fn next_used(&self, from: Pfn, end: Pfn) -> Scan {
        let mut pfn = from;
        for _ in 0..SCAN_BLOCKS {
            if pfn.0 >= end.0 {
                return Scan::Done;
            }
            // A unit's own descriptors leave with the unit: nothing to move.
            if self.buddy.table.is_unit_meta(pfn) {
                pfn = pfn.add(1);
                continue;
            }
            return Scan::Used(match self.block_at(pfn) {
                Some((head, order, true)) => {
                    pfn = head.add(1 << order);
                    continue;
                }
                Some((head, order, false)) => Used {
                    pfn,
                    nr_pages: (head.0 + (1u64 << order)).min(end.0) - pfn.0,
                    candidate: order == 0,
                },
                None => Used {
                    pfn,
                    nr_pages: 1,
                    candidate: false,
                },
            });
        }
        if pfn.0 >= end.0 {
            Scan::Done
        } else {
            Scan::Free(pfn)
        }
    }
}

/// Most pages moved per TLB broadcast. Each batch costs one broadcast (under TCG every
/// broadcast invalidation stops all vCPUs; measured at about 180 µs each on the 2-core
/// host this project is measured on, -smp 2) and one wake-up; 32-page batches made the
/// flushes an eighth of a migration's time (8192 per GiB). At 256 pages a GiB costs 1024
/// broadcasts. Larger batches do not lengthen the rmap lock's holds: those are taken per
/// [`HOLD_PAGES`] pages. The bound is the time a task that faults on a page of the batch
/// waits: the batch's copy (256 pages, about a megabyte, a few ms under TCG).
pub const MIGRATE_BATCH: usize = 256;

/// Most pages one hold of the rmap lock (which masks interrupts) covers, in steps 1-2 and
/// in steps 6-7: a few dozen page-table, reverse-map and allocator updates per hold.
pub const HOLD_PAGES: usize = 32;

/// Moves every movable page out of `range` (pageblock aligned, every pageblock isolated
/// by [`Mm::isolate_range`]) and reports what stayed. See the module doc for the steps
/// and the locking. Errors (nothing done): the range is empty, unaligned, not online or
/// not entirely isolated.
pub fn migrate_range<M: MmLock, R: RmapLock, P: PageTables>(
    mm: &mut M,
    rmap: &mut R,
    pt: &mut P,
    range: PfnRange,
) -> Result<MigrateReport, Error> {
    mm.with_mm(|m| m.check_isolated(range))?;
    let mut report = MigrateReport::default();
    let mut pfn = range.start;
    let mut batch: Vec<Pfn> = Vec::with_capacity(MIGRATE_BATCH);
    loop {
        // Collect the next batch of candidates; anything else used fails right away.
        batch.clear();
        let t0 = pt.now_ns();
        while batch.len() < MIGRATE_BATCH && pfn.0 < range.end_exclusive.0 {
            let used = match mm.with_mm(|m| m.next_used(pfn, range.end_exclusive)) {
                Scan::Used(used) => used,
                Scan::Free(next) => {
                    pfn = next;
                    continue;
                }
                Scan::Done => {
                    pfn = range.end_exclusive;
                    break;
                }
            };
            pfn = used.pfn.add(used.nr_pages);
            if used.candidate {
                batch.push(used.pfn);
            } else {
                report.fail(used.pfn, MigrateFailure::Unmovable, used.nr_pages);
            }
        }
        report.profile.add(Step::Scan, t0, pt.now_ns(), batch.len());
        if batch.is_empty() {
            break;
        }
        let (results, touched) = migrate_batch(mm, rmap, pt, &batch, range, &mut report.profile);
        // 8. Wake the waiters, once per batch.
        if touched {
            pt.wake_waiters();
        }
        for (&old, result) in batch.iter().zip(results) {
            match result {
                Ok(()) => {
                    report.moved_pages += 1;
                    report.bytes_copied += PAGE_SIZE;
                }
                Err(cause) => report.fail(old, cause, 1),
            }
        }
    }
    Ok(report)
}

/// One page of a batch on its way: its destination and its mappings (`maps` indexes the
/// batch's mapping list).
struct Move {
    old: Pfn,
    new: Pfn,
    map_count: u32,
    maps: core::ops::Range<usize>,
}

/// Moves the order-0 pages `olds` (steps 1-7 of the module doc, each step for the whole
/// batch, with one TLB flush). The rmap lock is taken per [`HOLD_PAGES`] pages for steps
/// 1-2 and again for steps 6-7, so a hold stays as short as with small batches. Returns
/// each page's outcome, in order, and whether any page-table entry was changed (waiters to
/// wake).
fn migrate_batch<M: MmLock, R: RmapLock, P: PageTables>(
    mm: &mut M,
    rmap: &mut R,
    pt: &mut P,
    olds: &[Pfn],
    range: PfnRange,
    profile: &mut MigrateProfile,
) -> (Vec<Result<(), MigrateFailure>>, bool) {
    let mut results: Vec<Result<(), MigrateFailure>> = Vec::with_capacity(olds.len());
    // (index in `olds`, the move) for the pages still going.
    let mut moves: Vec<(usize, Move)> = Vec::with_capacity(olds.len());
    let mut maps: Vec<Mapping> = Vec::with_capacity(olds.len());
    let mut flushed: Vec<Mapping> = Vec::new();
    let mut touched = false;
    for (c, chunk) in olds.chunks(HOLD_PAGES).enumerate() {
        let base = c * HOLD_PAGES;
        let first_move = moves.len();
        let mut t = [0u64; 3];
        t[0] = pt.now_ns();
        rmap.with_rmap(|rmap| {
            // 1. Pin check and destination, the chunk under one hold of the `Mm` lock.
            let mut prepared: ArrayVec<Result<Pfn, MigrateFailure>, HOLD_PAGES> = ArrayVec::new();
            mm.with_mm(|m| {
                prepared.extend(chunk.iter().map(|&old| match rmap.map_count(old) {
                    0 => Err(MigrateFailure::Unmovable),
                    n => m.migrate_prepare(old, n).map_err(|e| match e {
                        Prepare::Pinned => MigrateFailure::Pinned,
                        Prepare::Unmovable => MigrateFailure::Unmovable,
                        Prepare::NoMemory => MigrateFailure::NoMemory,
                    }),
                }))
            });
            for (j, (&old, prepared)) in chunk.iter().zip(prepared).enumerate() {
                let n = rmap.map_count(old);
                results.push(prepared.map(|_| ()));
                if let Ok(new) = prepared {
                    assert!(
                        !range.contains(new),
                        "mm: migration target {new:?} inside the isolated range {range:?}"
                    );
                    let first = maps.len();
                    maps.extend_from_slice(rmap.mappings(old));
                    let m = Move {
                        old,
                        new,
                        map_count: n,
                        maps: first..maps.len(),
                    };
                    moves.push((base + j, m));
                }
            }
            t[1] = pt.now_ns();
            // 2. Migration entries for every page of the chunk.
            let mut k = first_move;
            while k < moves.len() {
                let (i, ref mv) = moves[k];
                let mine = &maps[mv.maps.clone()];
                let mut done = 0;
                let old = mv.old;
                for m in mine {
                    // One walk per mapping: read the present entry, write the migration entry.
                    let prev = pt.update(m.as_id, m.va, &mut |pte| match pte {
                        Pte::Present { pfn, writable } if pfn == old => {
                            Some(Pte::Migrating { pfn, writable })
                        }
                        _ => None,
                    });
                    match prev {
                        Pte::Present { pfn, .. } if pfn == old => done += 1,
                        _ => break,
                    }
                }
                flushed.extend_from_slice(&mine[..done]);
                touched |= done > 0;
                if done == mine.len() {
                    k += 1;
                    continue;
                }
                // The reverse map disagrees with the page tables: leave the page alone.
                log::error!(
                    "mm: {:?} mapping {:?} not in the page tables",
                    mv.old,
                    mine[done]
                );
                restore(pt, &mine[..done], mv.old, mv.old);
                mm.with_mm(|m| m.migrate_abort(mv.old, mv.new));
                results[i] = Err(MigrateFailure::Unmovable);
                moves.remove(k);
            }
            t[2] = pt.now_ns();
        });
        profile.add(Step::Alloc, t[0], t[1], chunk.len());
        profile.add(Step::Unmap, t[1], t[2], moves.len() - first_move);
    }
    // 3. One flush for all of them, unlocked: the entries are the engine's now.
    let t0 = pt.now_ns();
    if !flushed.is_empty() {
        pt.flush(&flushed);
        profile.add(Step::Flush, t0, pt.now_ns(), moves.len());
    }
    // 4. Freeze, unless a pin came in before the entries went invalid.
    let t0 = pt.now_ns();
    let mut frozen: Vec<bool> = Vec::with_capacity(moves.len());
    for chunk in moves.chunks(HOLD_PAGES) {
        mm.with_mm(|m| {
            frozen.extend(
                chunk
                    .iter()
                    .map(|(_, mv)| m.migrate_freeze(mv.old, mv.map_count)),
            )
        });
    }
    let mut frozen = frozen.into_iter();
    moves.retain(|(i, mv)| {
        if frozen.next() == Some(true) {
            return true;
        }
        restore(pt, &maps[mv.maps.clone()], mv.old, mv.old);
        mm.with_mm(|m| m.migrate_abort(mv.old, mv.new));
        results[*i] = Err(MigrateFailure::Pinned);
        false
    });
    let t1 = pt.now_ns();
    profile.add(Step::Freeze, t0, t1, moves.len());
    // 5. Copy, unlocked: nothing can write `old` any more, nothing reaches `new` yet.
    for (_, mv) in &moves {
        pt.copy_page(mv.old, mv.new);
    }
    profile.add(Step::Copy, t1, pt.now_ns(), moves.len());
    for chunk in moves.chunks(HOLD_PAGES) {
        let mut t = [0u64; 3];
        rmap.with_rmap(|rmap| {
            t[0] = pt.now_ns();
            // 6. New entries.
            for (_, mv) in chunk {
                restore(pt, &maps[mv.maps.clone()], mv.old, mv.new);
            }
            t[1] = pt.now_ns();
            // 7. Reverse map and references; `old` is freed.
            for (_, mv) in chunk {
                if let Err(e) = rmap.move_page(mv.old, mv.new) {
                    panic!("mm: rmap move {:?} -> {:?} failed: {e}", mv.old, mv.new);
                }
            }
            mm.with_mm(|m| {
                for (_, mv) in chunk {
                    m.migrate_finish(mv.old, mv.new);
                }
            });
            t[2] = pt.now_ns();
        });
        profile.add(Step::Remap, t[0], t[1], chunk.len());
        profile.add(Step::Rmap, t[1], t[2], chunk.len());
    }
    (results, touched)
}

/// Turns the migration entries for `old` at `maps` into present entries for `to`, with
/// the permission each migration entry kept.
fn restore<P: PageTables>(pt: &mut P, maps: &[Mapping], old: Pfn, to: Pfn) {
    for m in maps {
        // One walk per mapping: read the migration entry, write the present one.
        let prev = pt.update(m.as_id, m.va, &mut |pte| match pte {
            Pte::Migrating { pfn, writable } if pfn == old => {
                Some(Pte::Present { pfn: to, writable })
            }
            _ => None,
        });
        // Only the engine rewrites its migration entries (see the contract).
        if !matches!(prev, Pte::Migrating { pfn, .. } if pfn == old) {
            panic!(
                "mm: migration entry for {old:?} at {m:?} changed during the migration: {prev:?}"
            );
        }
    }
}
