//! The run-time section calls of [`super::hotplug`] in bounded holds of the `Mm` lock: what
//! the kernel's hotplug uses, so that no hold of that IRQ-masking lock walks more than one
//! chunk of descriptors, whatever the size of the range (a 4 GiB plug is 32 chunks, not
//! 1 Mi descriptors under one hold).
//!
//! # Chunks
//! A chunk is the part of the range between two multiples of [`CHUNK_PAGES`] (8 pageblocks,
//! 16 MiB), so always inside one section. Per hold, a call writes at most one chunk's
//! descriptors (4096 of 32 bytes: 128 KiB) and walks at most its 8 pageblocks and their
//! free blocks. On the TCG host this project is measured on, a section's 1 MiB of
//! descriptors took about 2 ms to write, so a chunk's hold is a few hundred microseconds,
//! far below the 10 ms scheduler tick; a 4 GiB plug is 256 chunks, whose lock round trips
//! cost well under a millisecond in all. A pageblock per hold would cost 8 times the round
//! trips for holds already short; a section per hold would be 2 ms.
//!
//! The one write larger than a chunk is a new section's mem_map (1 MiB, every descriptor a
//! hole until its subsections are added). It is done outside the lock: one hold allocates
//! the pages ([`Mm::prepare_mem_map`](super::Mm)), the caller fills them through
//! [`MmLock::map_filled`] (the kernel's store needs no lock: nothing reaches the pages
//! yet), and the hold that adds the section's first chunk installs them.
//!
//! # The calls
//! Each one checks first, then works chunk by chunk, one hold per step of a chunk:
//! - [`add_online`]: (1) one hold checks the whole range (aligned, absent, no other zone in
//!   its sections; O(sections)); (2) per chunk: for a section without a mem_map, one hold
//!   allocates it and it is filled unlocked; then one hold installs it, adds the chunk and
//!   puts it online *isolated*: its descriptors written once in the online state, its free
//!   pages on the `Isolate` lists; (3) per chunk, one hold un-isolates it. If (2) fails (no
//!   memory for a mem_map), every chunk added so far is offlined and removed (two holds
//!   each) and the error returned: nothing of the range stays.
//! - [`online`] (re-online after a refused unplug), [`isolate`], [`unisolate`], [`remove`]:
//!   one hold checks the whole range (O(sections) or O(pageblocks)), then one hold per chunk.
//! - [`offline`]: one hold per chunk checks that it is isolated and free (and that the range
//!   is of one zone, so that a failure can put it back), then one hold per chunk offlines it.
//!
//! # Between holds
//! Every hold runs one complete call of [`super::hotplug`] on one chunk, so between holds
//! the model is consistent: [`Mm::check`](super::Mm::check) holds. Other CPUs may allocate and free between
//! holds and never see a half-written descriptor: descriptors are written only inside a
//! hold, and a page reaches an allocatable free list only in the hold that finishes it.
//! - Adding: until every chunk is in, the range's pages sit on the `Isolate` lists, which
//!   nothing allocates from; so no page of the range is handed out while a later chunk can
//!   still fail, and a failure can take all of it back (isolated and free: offline and
//!   remove cannot fail). Allocations between holds come from the rest of memory.
//! - Offlining: in an isolated range, free pages stay free (nothing allocates there) and
//!   nothing else un-isolates it, so a range found free chunk by chunk is still free when
//!   its chunks go offline.
//! - The checks in one hold hold for the later holds because one caller at a time changes
//!   the hotplug state of a range (the kernel's hotplug worker): these calls are not atomic
//!   against another run-time call on the same range between their holds. Should a later
//!   step fail anyway, the call undoes the chunks it did (where it can) and returns the
//!   error.
//!
//! Locks: each step takes the `Mm` lock through [`MmLock`] (one `with_mm` per hold); the
//! caller holds none.
#![forbid(unsafe_code)]

use super::hotplug::Online;
use super::model::MmLock;
use super::page::{Page, ZoneType};
use super::types::{NodeId, Pfn, PfnRange, PAGES_PER_PAGEBLOCK, PAGES_PER_SECTION};
use super::Error;

/// Most pages one hold of the `Mm` lock covers in these calls: 8 pageblocks (16 MiB, whose
/// descriptors are 128 KiB). See the module doc for why.
pub const CHUNK_PAGES: u64 = 8 * PAGES_PER_PAGEBLOCK;

const _: () = assert!(
    PAGES_PER_SECTION % CHUNK_PAGES == 0 && CHUNK_PAGES % PAGES_PER_PAGEBLOCK == 0,
    "a chunk is whole pageblocks inside one section"
);

/// The chunks of `range`: its pieces between multiples of [`CHUNK_PAGES`], in ascending
/// order (each inside one section).
pub fn chunks(range: PfnRange) -> impl Iterator<Item = PfnRange> + Clone {
    let mut start = range.start;
    core::iter::from_fn(move || {
        if start >= range.end_exclusive {
            return None;
        }
        let next = (start.0 / CHUNK_PAGES + 1) * CHUNK_PAGES;
        let c = PfnRange::new(start, Pfn(range.end_exclusive.0.min(next)));
        start = c.end_exclusive;
        Some(c)
    })
}

/// [`Mm::add_online_range`](super::Mm::add_online_range) in bounded holds (see the module
/// doc). On error nothing of `range` is left added.
pub fn add_online<M: MmLock>(
    mm: &mut M,
    range: PfnRange,
    node: NodeId,
    zone: ZoneType,
) -> Result<(), Error> {
    mm.with_mm(|m| m.check_add_online(range, zone))?;
    for (i, c) in chunks(range).enumerate() {
        let added = mm
            .with_mm(|m| m.prepare_mem_map(c, node))
            .and_then(|prepared| {
                let map = prepared.map(|(meta, hole)| mm.map_filled::<Page>(meta, hole));
                mm.with_mm(|m| m.add_online_chunk(c, node, zone, map, Online::Isolated))
            });
        if let Err(e) = added {
            for done in chunks(range).take(i) {
                let undone = mm
                    .with_mm(|m| m.offline_range(done))
                    .and_then(|()| mm.with_mm(|m| m.remove_sections(done)));
                if let Err(u) = undone {
                    // Isolated and free, and only this call changes it: a model bug.
                    log::error!("mm: cannot take back {done:?} after a failed add: {u}");
                }
            }
            return Err(e);
        }
    }
    for c in chunks(range) {
        if let Err(e) = mm.with_mm(|m| m.unisolate_range(c)) {
            // Every chunk went online isolated above, and only this call changes them.
            log::error!("mm: cannot release {c:?} after adding it: {e}");
        }
    }
    Ok(())
}

/// [`Mm::online_range`](super::Mm::online_range) in bounded holds. On an error of the
/// check nothing changed.
pub fn online<M: MmLock>(mm: &mut M, range: PfnRange, zone: ZoneType) -> Result<(), Error> {
    mm.with_mm(|m| m.check_online(range, zone))?;
    each_chunk(mm, range, |m, c| m.online_range(c, zone))
}

/// [`Mm::isolate_range`](super::Mm::isolate_range) in bounded holds. On an error of the
/// check nothing changed; should a chunk fail after it, the chunks done are un-isolated.
pub fn isolate<M: MmLock>(mm: &mut M, range: PfnRange) -> Result<(), Error> {
    mm.with_mm(|m| m.check_isolate(range))?;
    for (i, c) in chunks(range).enumerate() {
        if let Err(e) = mm.with_mm(|m| m.isolate_range(c)) {
            for done in chunks(range).take(i) {
                let _ = mm.with_mm(|m| m.unisolate_range(done));
            }
            return Err(e);
        }
    }
    Ok(())
}

/// [`Mm::unisolate_range`](super::Mm::unisolate_range) in bounded holds. On an error of
/// the check nothing changed.
pub fn unisolate<M: MmLock>(mm: &mut M, range: PfnRange) -> Result<(), Error> {
    mm.with_mm(|m| m.check_unisolate(range))?;
    each_chunk(mm, range, |m, c| m.unisolate_range(c))
}

/// [`Mm::offline_range`](super::Mm::offline_range) in bounded holds, for a range of one zone
/// (what hotplug onlined; `ZoneConflict` otherwise). If any chunk is not isolated and free
/// nothing changed (`Busy` names its first used page); should a chunk fail after every
/// check passed, the chunks offlined are put back online, isolated, as they were.
pub fn offline<M: MmLock>(mm: &mut M, range: PfnRange) -> Result<(), Error> {
    let mut zone = None;
    for c in chunks(range) {
        let z = mm.with_mm(|m| m.check_offline(c).map(|()| m.zone_at(c.start)))?;
        match (zone, z) {
            (Some(first), Some(z)) if z != first => {
                return Err(Error::ZoneConflict(c.start.section()))
            }
            _ => zone = zone.or(z),
        }
    }
    // Online pageblocks have a zone: `check_offline` found every chunk online.
    let zone = zone.unwrap_or(ZoneType::Movable);
    for (i, c) in chunks(range).enumerate() {
        if let Err(e) = mm.with_mm(|m| m.offline_range(c)) {
            for done in chunks(range).take(i) {
                let _ = mm.with_mm(|m| m.online_range_as(done, zone, Online::Isolated));
            }
            return Err(e);
        }
    }
    Ok(())
}

/// [`Mm::remove_sections`](super::Mm::remove_sections) in bounded holds. On an error of
/// the check nothing changed.
pub fn remove<M: MmLock>(mm: &mut M, range: PfnRange) -> Result<(), Error> {
    mm.with_mm(|m| m.check_remove(range))?;
    each_chunk(mm, range, |m, c| m.remove_sections(c))
}

/// Runs `f` on each chunk of `range`, one hold each, stopping at the first error.
fn each_chunk<M: MmLock>(
    mm: &mut M,
    range: PfnRange,
    mut f: impl FnMut(&mut super::Mm<M::Store>, PfnRange) -> Result<(), Error>,
) -> Result<(), Error> {
    for c in chunks(range) {
        mm.with_mm(|m| f(m, c))?;
    }
    Ok(())
}
