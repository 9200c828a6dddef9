//! RAM and reservations: `memory` nodes, the header's `/memreserve/` block and the
//! children of `/reserved-memory`.
//!
//! - A `memory` node (by `device_type` or by name, at depth 1) gives one
//!   [`MemoryRegion`] per `reg` entry, with its `numa-node-id` (0 when absent).
//! - `/memreserve/` entries and `/reserved-memory` children with a static `reg` become
//!   [`Reservation`]s; a child without `reg` (a dynamic pool) reserves nothing.
//! - Every range is cut at 2^64 ([`Walk::clamped_range`]) and a zero-size one is dropped.
//! - After the walk, [`Walk::sort_memory`] sorts memory by base and trims overlaps from
//!   the later range, so [`BootInfo::memory`] never overlaps.
//!
//! Lists that fill up are warnings; the ranges beyond the capacity are left out.
//!
//! [`BootInfo::memory`]: super::BootInfo::memory

use core::fmt;

use arrayvec::ArrayVec;

use super::cells::{be64, prop_u32, Props};
use super::walk::{warn_dt, Visit, Walk};
use super::{MemoryRegion, PhysRange, Reservation, ReserveKind, MAX_MEMORY_REGIONS, MAX_RESERVED};

impl<'a> Walk<'a> {
    /// The header's memory reservation block (DT spec 5.3): (address, size) pairs of
    /// u64 ending with (0, 0).
    pub(super) fn read_memreserve(&mut self, blob: &'a [u8], off: usize) {
        let mut pos = off;
        loop {
            let (Some(address), Some(size)) = (be64(blob, pos), be64(blob, pos.saturating_add(8)))
            else {
                warn_dt!(self, "/memreserve/ block has no end marker");
                return;
            };
            pos = pos.saturating_add(16);
            if address == 0 && size == 0 {
                return;
            }
            if let Some(range) = self.clamped_range("/memreserve/", address, size) {
                self.push_reserved(range, ReserveKind::MemReserve);
            }
        }
    }

    pub(super) fn memory_node(&mut self, node: Visit<'_, 'a>) {
        let name = node.this.name;
        let Some(reg) = node.props.reg else {
            warn_dt!(self, "{}: memory node without reg", name);
            return;
        };
        let numa = self.numa_node(name, node.props);
        for range in self.regs(node.ancestors, name, reg) {
            let Some(range) = self.clamped_range(name, range.base, range.size) else {
                continue;
            };
            if self
                .info
                .memory
                .try_push(MemoryRegion { range, node: numa })
                .is_err()
            {
                warn_dt!(
                    self,
                    "{}: more than {} memory ranges",
                    name,
                    MAX_MEMORY_REGIONS
                );
                return;
            }
        }
    }

    /// A child of `/reserved-memory`: each static `reg` entry is a reservation.
    pub(super) fn reserved_memory_node(&mut self, node: Visit<'_, 'a>) {
        let name = node.this.name;
        if let Some(reg) = node.props.reg {
            for range in self.regs(node.ancestors, name, reg) {
                if let Some(range) = self.clamped_range(name, range.base, range.size) {
                    self.push_reserved(range, ReserveKind::ReservedMemory);
                }
            }
        }
    }

    /// `numa-node-id` of a memory or cpu node: 0 when absent, 0 with a warning when bad.
    pub(super) fn numa_node(&mut self, name: fdt::nodes::NodeName<'a>, props: &Props<'a>) -> u32 {
        match props.numa_node_id.map(prop_u32) {
            None => 0,
            Some(Some(node)) => node,
            Some(None) => {
                warn_dt!(self, "{}: bad numa-node-id", name);
                0
            }
        }
    }

    /// `[base, base + size)` as a range; `None` when empty, cut (with a warning) at 2^64.
    fn clamped_range(
        &mut self,
        what: impl fmt::Display,
        base: u64,
        size: u64,
    ) -> Option<PhysRange> {
        if size == 0 {
            return None;
        }
        if let Some(range) = PhysRange::new(base, size) {
            return Some(range);
        }
        warn_dt!(
            self,
            "{}: range {:#x}+{:#x} passes 2^64, cut",
            what,
            base,
            size
        );
        Some(PhysRange {
            base,
            size: u64::MAX - base,
        })
        .filter(|r| r.size != 0)
    }

    fn push_reserved(&mut self, range: PhysRange, kind: ReserveKind) {
        if self
            .info
            .reserved
            .try_push(Reservation { range, kind })
            .is_err()
        {
            warn_dt!(self, "more than {} reserved ranges", MAX_RESERVED);
        }
    }

    /// Sorts memory by base and trims overlaps from the later range.
    pub(super) fn sort_memory(&mut self) {
        self.info
            .memory
            .sort_unstable_by_key(|m| (m.range.base, core::cmp::Reverse(m.range.size)));
        let mut kept: ArrayVec<MemoryRegion, MAX_MEMORY_REGIONS> = ArrayVec::new();
        let mut end = 0u64; // End of the last kept range; 0 before the first.
        for mut region in core::mem::take(&mut self.info.memory) {
            let region_end = region.range.end();
            if !kept.is_empty() && region.range.base < end {
                warn_dt!(
                    self,
                    "memory {:#x}+{:#x} overlaps, trimmed",
                    region.range.base,
                    region.range.size
                );
                if region_end <= end {
                    continue;
                }
                region.range = PhysRange {
                    base: end,
                    size: region_end - end,
                };
            }
            end = region_end;
            // Cannot fail: `kept` has the capacity the input had.
            let _ = kept.try_push(region);
        }
        self.info.memory = kept;
    }
}
