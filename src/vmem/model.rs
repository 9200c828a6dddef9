//! The memory-model half of [`HotplugMemory`](super::HotplugMemory): each call of the
//! policy's memory side expressed over one [`Mm`], shared by the kernel glue and the host
//! tests. The kernel glue adds what the model does not know (the linear map, mapped before
//! [`mm_add_online`] and unmapped before [`mm_remove`]) and takes the model's lock around
//! each call. The calls that walk a range's descriptors (add and online, re-online, remove)
//! take the model as an [`MmLock`] and run in bounded holds ([`mm::chunked`]), so a plug of
//! gigabytes never masks interrupts for long; the others take it by reference, under one
//! hold the caller takes.
//!
//! Errors of the model reach the policy through [`mm_err`]: out of memory and a busy page
//! keep their meaning (the policy reacts to them), every other refusal is carried as it is
//! in [`MemError::Mm`].
//!
//! The two limits here are the memory model's reserve and floor ([`crate::mm::reserve`])
//! seen from hotplug: plugging keeps twice the kernel reserve of Normal free after the new
//! mem_maps ([`mem_map_reserve_bytes`]), and unplug keeps the reserve plus the floor free
//! after moving a unit's pages out ([`mm_floor_allows`]), which is exactly the room the
//! migration destinations leave. Both are computed under the model's lock without
//! allocating (the heap must not be used while that lock is held).

use super::{MemError, PhysRange};
use crate::mm::{self, MemMapStore, Mm, MmLock, NodeId, Pfn, PfnRange, PhysAddr, ZoneType};
use alloc::vec::Vec;

/// Free Normal memory that plugging never uses for mem_maps: twice the kernel reserve,
/// `max(16 MiB, managed Normal / 32)` (see the module doc).
pub fn mem_map_reserve_bytes(managed_normal_bytes: u64) -> u64 {
    2 * mm::kernel_reserve_bytes(managed_normal_bytes)
}

/// The pfns of a physical range.
pub fn pfn_range(r: PhysRange) -> PfnRange {
    PfnRange::new(Pfn::down(PhysAddr(r.base)), Pfn::down(PhysAddr(r.end())))
}

/// The hotplug view of a memory-model error.
pub fn mm_err(e: mm::Error) -> MemError {
    match e {
        mm::Error::NoMemory => MemError::NoMemory,
        mm::Error::Busy(_) => MemError::InUse,
        e => MemError::Mm(e),
    }
}

/// [`HotplugMemory::can_add`](super::HotplugMemory::can_add) over the model: the mem_maps
/// of the sections `range` would add against the free Normal memory of all nodes together,
/// minus the reserve ([`mem_map_reserve_bytes`]). Allocates nothing (it runs under the
/// model's lock).
pub fn mm_can_add<S: MemMapStore>(m: &Mm<S>, range: PhysRange) -> bool {
    let cost = m.metadata_bytes_for(pfn_range(range));
    let (mut free, mut managed) = (0u64, 0u64);
    for z in m.stats().filter(|z| z.zone == Some(ZoneType::Normal)) {
        free += z.free_pages * mm::PAGE_SIZE;
        managed += z.managed_pages * mm::PAGE_SIZE;
    }
    free >= cost + mem_map_reserve_bytes(managed)
}

/// [`HotplugMemory::add_online`](super::HotplugMemory::add_online) over the model:
/// sections, mem_maps, and the pages online in `zone`, in one pass over the new
/// descriptors, in bounded holds ([`mm::chunked::add_online`]). On error nothing of the
/// range is left added.
pub fn mm_add_online<M: MmLock>(
    mm: &mut M,
    range: PhysRange,
    node: NodeId,
    zone: ZoneType,
) -> Result<(), MemError> {
    mm::chunked::add_online(mm, pfn_range(range), node, zone).map_err(mm_err)
}

/// Whether taking `range` out (moving its used pages elsewhere) keeps `floor_bytes` free on
/// top of the kernel reserve: the free memory left afterwards (all zones) must be at least
/// reserve + floor, which is what migration destinations leave in Normal.
pub fn mm_floor_allows<S: MemMapStore>(m: &Mm<S>, range: PhysRange, floor_bytes: u64) -> bool {
    let r = pfn_range(range);
    let free_here = m.free_pages_in(r);
    let used_here = mm_used_pages(m, range);
    let free_total = m.total_stats().free_pages;
    free_total.saturating_sub(free_here + used_here) * mm::PAGE_SIZE
        >= floor_bytes + m.reserve_bytes()
}

/// How many of `ranges` (a prefix, taken together) [`mm_floor_allows`] lets go: taking
/// them all out keeps `floor_bytes` free on top of the kernel reserve.
pub fn mm_floor_allows_prefix<S: MemMapStore>(
    m: &Mm<S>,
    ranges: &[PhysRange],
    floor_bytes: u64,
) -> usize {
    let keep = floor_bytes + m.reserve_bytes();
    let mut left = m.total_stats().free_pages;
    for (i, &range) in ranges.iter().enumerate() {
        let r = pfn_range(range);
        let free_here = m.free_pages_in(r);
        let used_here = mm_used_pages(m, range);
        left = left.saturating_sub(free_here + used_here);
        if left * mm::PAGE_SIZE < keep {
            return i;
        }
    }
    ranges.len()
}

/// The steps of [`HotplugMemory::offline_pass`](super::HotplugMemory::offline_pass) for
/// one unit, as the memory side implements them.
pub trait PassSteps {
    /// Isolates the unit (nothing is allocated from it any more).
    fn isolate(&mut self, range: PhysRange) -> Result<(), MemError>;
    /// Moves the unit's used pages out (the unit is isolated); the pages moved.
    fn migrate(&mut self, range: PhysRange) -> Result<u64, MemError>;
    /// Offlines the isolated, free unit.
    fn offline(&mut self, range: PhysRange) -> Result<(), MemError>;
    /// Undoes [`PassSteps::isolate`] after a failure.
    fn unisolate(&mut self, range: PhysRange);
}

/// [`HotplugMemory::offline_pass`](super::HotplugMemory::offline_pass) over its steps:
/// the first `allowed` units (what the floor lets go, [`mm_floor_allows_prefix`]) are all
/// isolated before any page moves, so migration destinations lie outside every unit of the
/// pass and no page moves twice in it; then each is emptied and offlined, and a unit that
/// fails is un-isolated (online as before).
pub fn offline_pass<P: PassSteps>(
    steps: &mut P,
    ranges: &[PhysRange],
    allowed: usize,
) -> Vec<Result<u64, MemError>> {
    let mut out: Vec<Result<u64, MemError>> = ranges
        .iter()
        .enumerate()
        .map(|(i, &range)| match i < allowed {
            true => steps.isolate(range).map(|()| 0),
            false => Err(MemError::Floor),
        })
        .collect();
    for (&range, result) in ranges.iter().zip(out.iter_mut()) {
        if result.is_err() {
            continue;
        }
        *result = steps
            .migrate(range)
            .and_then(|moved| steps.offline(range).map(|()| moved));
        if result.is_err() {
            steps.unisolate(range);
        }
    }
    out
}

/// Allocated pages of an online `range`: its present pages minus its free pages and minus
/// the descriptor pages of units that carry their own (memmap on memory): those are
/// bookkeeping that leaves with the unit, nothing to move out, so a unit holding only them
/// is empty to the unplug policy (it goes in one run with its empty neighbours).
pub fn mm_used_pages<S: MemMapStore>(m: &Mm<S>, range: PhysRange) -> u64 {
    let r = pfn_range(range);
    r.nr_pages()
        .saturating_sub(m.free_pages_in(r) + m.unit_meta_in(r))
}

/// [`HotplugMemory::reonline`](super::HotplugMemory::reonline) over the model (into
/// `zone`), in bounded holds.
pub fn mm_reonline<M: MmLock>(
    mm: &mut M,
    range: PhysRange,
    zone: ZoneType,
) -> Result<(), MemError> {
    mm::chunked::online(mm, pfn_range(range), zone).map_err(mm_err)
}

/// [`HotplugMemory::remove`](super::HotplugMemory::remove) over the model (the caller
/// unmaps first), in bounded holds.
pub fn mm_remove<M: MmLock>(mm: &mut M, range: PhysRange) -> Result<(), MemError> {
    mm::chunked::remove(mm, pfn_range(range)).map_err(mm_err)
}
