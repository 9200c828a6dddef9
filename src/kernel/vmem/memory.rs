//! The memory side of the hotplug policy in the kernel: [`KernelMemory`] is the policy's
//! [`HotplugMemory`] over the one memory model and the linear map, plus the boot options
//! that shape it (the floor, the zone hot-plugged memory goes to).
//!
//! The floor (`unplug_floor_mib=`) lives in the memory model (`mem::set_floor_bytes`):
//! workloads and migration destinations leave it free on top of the kernel reserve, and an
//! unplug goes ahead only if that much stays free after the unit's pages moved out
//! ([`vmem::mm_floor_allows`] with the model's own floor).
//!
//! Order of the two halves: memory is mapped in the linear map before the model adds it
//! (the mapping is not taken under the model's lock: table pages come from the model) and
//! unmapped, with TLBs flushed on every CPU, before the model forgets it (both before the
//! device is asked to unplug it). Offlining a pass of units checks the unplug floor for
//! them together, isolates every one, then per unit moves its movable pages out
//! (`migrate::migrate_out`) and offlines it; a unit that fails is un-isolated and stays
//! online.
//!
//! Locks: each call takes `mm_lock()` for the model's part only. The calls that walk a
//! range's descriptors (add and online, isolate, offline, un-isolate, re-online, remove)
//! take it once per chunk of at most [`chunked::CHUNK_PAGES`] pages, releasing it in
//! between ([`hotmem::mm::chunked`] says why the model stays consistent between chunks); the
//! rest take it once ([`with`]). Offlining takes the migration locks in between, with the
//! model's lock released. The boot options are written once by [`configure`] before any
//! device is probed.

use crate::kernel::mem::{self, mm_lock};
use crate::kernel::migrate::{self, ModelLock};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use hotmem::mm::{chunked, NodeId, ZoneType};
use hotmem::vmem::stats::{self, Phase};
use hotmem::vmem::{self, HotplugMemory, MemError};
use hotmem_arch::addr::PhysRange;
use hotmem_arch::layout::PAGE_SIZE;
use hotmem_arch::mmu;
use hotmem_arch::pgtable::{Attrs, Granule};
use hotmem_arch::timer;

/// The memory model plus the linear map as the policy's [`HotplugMemory`].
pub(super) struct KernelMemory;

/// Runs `f` on the model under one hold of its lock.
fn with<R>(f: impl FnOnce(&mut mem::KernelMm) -> Result<R, MemError>) -> Result<R, MemError> {
    match mm_lock().as_mut() {
        Some(m) => f(m),
        None => Err(MemError::Other("no memory model")),
    }
}

/// The model for the calls that take its lock once per chunk (it exists once booted, and
/// stays).
fn chunked_model() -> Result<ModelLock, MemError> {
    match mm_lock().is_some() {
        true => Ok(ModelLock),
        false => Err(MemError::Other("no memory model")),
    }
}

impl HotplugMemory for KernelMemory {
    fn can_add(&mut self, range: PhysRange, _node: NodeId) -> bool {
        mm_lock()
            .as_ref()
            .is_some_and(|m| vmem::mm_can_add(m, range))
    }

    fn add_online(&mut self, range: PhysRange, node: NodeId) -> Result<(), MemError> {
        let pages = range.size / PAGE_SIZE;
        // Mapped first (not under the model's lock: table pages come from the model).
        // Nothing touches the range until the model hands out its pages.
        let mapped = stats::time(Phase::MapLinear, pages, || {
            mmu::map_linear(range, Attrs::RAM, Granule::Block2M)
        });
        if let Err(e) = mapped {
            log::error!(
                "vmem: cannot map 0x{:x}+0x{:x}: {e:?}",
                range.base,
                range.size
            );
            let _ = mmu::unmap_linear(range);
            return Err(MemError::NoMemory);
        }
        stats::time(Phase::Add, pages, || {
            chunked_model()
                .and_then(|mut mm| vmem::mm_add_online(&mut mm, range, node, online_zone()))
        })
        .inspect_err(|_| {
            let _ = mmu::unmap_linear(range);
        })
    }

    fn offline(&mut self, range: PhysRange) -> Result<u64, MemError> {
        self.offline_pass(&[range]).remove(0)
    }

    fn offline_pass(&mut self, ranges: &[PhysRange]) -> Vec<Result<u64, MemError>> {
        let mut steps = match chunked_model() {
            Ok(mm) => KernelPass(mm),
            Err(e) => return ranges.iter().map(|_| Err(e)).collect(),
        };
        let allowed =
            with(|m| Ok(vmem::mm_floor_allows_prefix(m, ranges, m.floor_bytes()))).unwrap_or(0);
        vmem::offline_pass(&mut steps, ranges, allowed)
    }

    fn used_pages(&mut self, range: PhysRange) -> u64 {
        mm_lock()
            .as_ref()
            .map_or(0, |m| vmem::mm_used_pages(m, range))
    }

    fn reonline(&mut self, range: PhysRange) -> Result<(), MemError> {
        vmem::mm_reonline(&mut chunked_model()?, range, online_zone())
    }

    fn remove(&mut self, range: PhysRange) -> Result<(), MemError> {
        // The model forgets the range first: with memmap on memory the range holds its own
        // descriptors, which the removal rewrites and releases through the linear map. The
        // range is offline, so nothing else reaches it in between. Then it is unmapped (and
        // TLBs flushed on every CPU) before the device may take it back.
        let pages = range.size / PAGE_SIZE;
        let mut mm = chunked_model()?;
        stats::time(Phase::Remove, pages, || vmem::mm_remove(&mut mm, range))?;
        stats::time(Phase::UnmapLinear, pages, || mmu::unmap_linear(range))
            .map_err(|_| MemError::Other("unmap"))?;
        Ok(())
    }
}

/// The steps of an unplug pass over the model in bounded holds and the migration engine,
/// each counted in the unplug profile.
struct KernelPass(ModelLock);

impl vmem::PassSteps for KernelPass {
    fn isolate(&mut self, range: PhysRange) -> Result<(), MemError> {
        let pfns = vmem::pfn_range(range);
        stats::time(Phase::Isolate, pfns.nr_pages(), || {
            chunked::isolate(&mut self.0, pfns)
        })
        .map_err(vmem::mm_err)
    }

    fn migrate(&mut self, range: PhysRange) -> Result<u64, MemError> {
        let t0 = timer::now_ns();
        let moved = migrate::migrate_out(vmem::pfn_range(range)).map(|r| r.moved_pages);
        let pages = *moved.as_ref().unwrap_or(&0);
        stats::add(Phase::Migrate, 1, timer::now_ns() - t0, pages);
        moved
    }

    fn offline(&mut self, range: PhysRange) -> Result<(), MemError> {
        let pfns = vmem::pfn_range(range);
        stats::time(Phase::Offline, pfns.nr_pages(), || {
            chunked::offline(&mut self.0, pfns)
        })
        .map_err(vmem::mm_err)
    }

    fn unisolate(&mut self, range: PhysRange) {
        let _ = chunked::unisolate(&mut self.0, vmem::pfn_range(range));
    }
}

/// Hot-plugged memory goes to Normal instead of Movable (bootarg `memhp_online=normal`).
static ONLINE_NORMAL: AtomicBool = AtomicBool::new(false);

fn online_zone() -> ZoneType {
    if ONLINE_NORMAL.load(Ordering::Relaxed) {
        ZoneType::Normal
    } else {
        ZoneType::Movable
    }
}

/// Applies the boot arguments that shape hotplug.
pub fn configure(args: &hotmem::shell::BootArgs) {
    stats::set_clock(timer::now_ns);
    mem::set_floor_bytes(args.unplug_floor_mib << 20);
    ONLINE_NORMAL.store(args.memhp_online_normal, Ordering::Relaxed);
    if args.memhp_online_normal {
        log::warn!("vmem: hot-plugged memory goes to the Normal zone: unplug is best effort");
    }
}
