//! The kernel reserve and the floor: how much free Normal memory each class of allocation
//! must leave, so that the kernel's own allocations always find pages while workloads grow
//! and unplug moves data into Normal.
//!
//! # Model
//! Normal memory is the only memory the kernel can use for itself (Movable memory can be
//! unplugged at any time), so its free pages are shared out by [`AllocClass`]:
//! ```text
//!   free Normal memory (all nodes together, isolated pages not counted)
//!   ┌─────────────────────────┐
//!   │ anyone                  │
//!   ├─────────────────────────┤ ◀ reserve + floor: workloads and migration destinations stop here
//!   │ floor                   │   (memtest may go on: it returns everything when it ends)
//!   ├─────────────────────────┤ ◀ reserve: memtest stops here
//!   │ kernel reserve          │   only kernel allocations (heap, page tables, DMA, stacks)
//!   └─────────────────────────┘ 0
//! ```
//! - **reserve** `R = max(8 MiB, managed Normal / 64)` ([`kernel_reserve_bytes`]), managed
//!   Normal summed over the nodes (it grows when hot-plugged memory joins Normal);
//! - **floor** `F` = the kernel's `unplug_floor_mib` ([`Mm::set_floor_bytes`]; 0 until set);
//! - an allocation of class `c` takes pages from a Normal zone only if afterwards the
//!   allocatable free Normal pages are at least `keep(c)`: `Kernel` 0, `Transient` R,
//!   `Workload` R + F. It then tries the next zone or node; when none has room it fails
//!   with a clean [`AllocError::NoMemory`](super::AllocError::NoMemory). The Movable zone
//!   has no watermark: all of it is for movable data.
//!
//! Users of the same numbers outside the allocator (`crate::vmem`'s memory side):
//! - unplug keeps R + F free after it moved a unit's pages out, the room migration
//!   destinations leave, so its check says beforehand whether the move can fit;
//! - plugging keeps 2R of Normal free after the new mem_maps: they are kernel memory that
//!   can be refused (plugging then stalls with `no_memory`), so they stop while the reserve
//!   is still covered twice, once for the kernel and once for the metadata of what the new
//!   memory will hold (reverse-map entries and page tables, about 1.2% of what is mapped).
//!
//! Why the classes are what they are: a workload that grows while unplug moves its pages
//! into Normal would otherwise take the last free page, and the kernel's next allocation (a
//! page-table page, a heap slab for teardown bookkeeping) fails. A workload's own
//! page-table pages are `Workload` memory too, so once Normal is down to the watermark a
//! workload stops growing within one table page (512 mapped pages); the reverse-map entries
//! of what it still maps come from the heap, which is kernel memory.
//!
//! Cost: kernel allocations check nothing. A `Transient` or `Workload` allocation that
//! reaches a Normal zone sums the Normal counters of [`MAX_NODES`] nodes once.
//!
//! [`Mm::pressure`] is the state a failed allocation is explained with: free memory per
//! zone and its largest free block, the reserve and the floor, in a fixed-size value (no
//! heap allocation, so it may be taken under the `Mm` lock).
//!
//! Locks: part of `Mm`, under the kernel's `Mm` lock.
#![forbid(unsafe_code)]

use core::fmt;

use arrayvec::ArrayVec;

use super::buddy::Buddy;
use super::model::Mm;
use super::page::{MigrateType, ZoneType};
use super::store::MemMapStore;
use super::types::{NodeId, MAX_NODES, NR_ORDERS, PAGE_SIZE};
use super::AllocClass;

/// Smallest kernel reserve in bytes.
pub const RESERVE_MIN_BYTES: u64 = 8 << 20;
/// The kernel reserve is at least managed Normal memory divided by this.
pub const RESERVE_DIVISOR: u64 = 64;

/// The kernel reserve for `managed_normal_bytes` of managed Normal memory:
/// `max(8 MiB, managed / 64)`.
pub const fn kernel_reserve_bytes(managed_normal_bytes: u64) -> u64 {
    let share = managed_normal_bytes / RESERVE_DIVISOR;
    if share > RESERVE_MIN_BYTES {
        share
    } else {
        RESERVE_MIN_BYTES
    }
}

const NORMAL: usize = ZoneType::Normal.index();

/// Free pages of `zone` that can be allocated (isolated pageblocks excluded).
fn allocatable(zone: &super::buddy::Zone) -> u64 {
    zone.nr_free[MigrateType::Unmovable.index()] + zone.nr_free[MigrateType::Movable.index()]
}

impl Buddy {
    /// The kernel reserve in pages.
    pub(crate) fn reserve_pages(&self) -> u64 {
        let managed: u64 = self
            .nodes
            .iter()
            .map(|n| n.zones[NORMAL].managed_pages)
            .sum();
        kernel_reserve_bytes(managed * PAGE_SIZE) / PAGE_SIZE
    }

    /// Allocatable free pages of Normal, all nodes together.
    pub(crate) fn normal_allocatable(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| allocatable(&n.zones[NORMAL]))
            .sum()
    }

    /// Free Normal pages an allocation of `class` must leave.
    pub(crate) fn keep_pages(&self, class: AllocClass) -> u64 {
        match class {
            AllocClass::Kernel => 0,
            AllocClass::Transient => self.reserve_pages(),
            AllocClass::Workload => self.reserve_pages() + self.floor_pages,
        }
    }

    /// Whether Normal may give `2^order` pages to an allocation of `class`.
    pub(crate) fn normal_allows(&self, order: u32, class: AllocClass) -> bool {
        class == AllocClass::Kernel
            || self.normal_allocatable() >= self.keep_pages(class) + (1u64 << order)
    }
}

/// One zone of one node in a [`Pressure`] snapshot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ZonePressure {
    pub node: NodeId,
    pub zone: ZoneType,
    /// Free pages that can be allocated (isolated ones not counted).
    pub free_pages: u64,
    /// The order of the largest allocatable free block (`None`: nothing free).
    pub largest_order: Option<u32>,
}

/// The memory state that explains a failed allocation (see the module doc).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Pressure {
    /// Every zone of every node with memory.
    pub zones: ArrayVec<ZonePressure, { 2 * MAX_NODES }>,
    pub reserve_pages: u64,
    pub floor_pages: u64,
}

impl fmt::Display for Pressure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kib = PAGE_SIZE / 1024;
        for z in &self.zones {
            write!(
                f,
                "node{} {} free_kib={} largest_order=",
                z.node,
                z.zone,
                z.free_pages * kib
            )?;
            match z.largest_order {
                Some(o) => write!(f, "{o}; ")?,
                None => f.write_str("none; ")?,
            }
        }
        write!(
            f,
            "reserve_kib={} floor_kib={}",
            self.reserve_pages * kib,
            self.floor_pages * kib
        )
    }
}

impl<S: MemMapStore> Mm<S> {
    /// Sets the floor: free Normal memory that workloads and migration destinations leave
    /// on top of the kernel reserve, and that unplug keeps (rounded down to pages).
    pub fn set_floor_bytes(&mut self, bytes: u64) {
        self.buddy.floor_pages = bytes / PAGE_SIZE;
    }

    /// The floor in bytes.
    pub fn floor_bytes(&self) -> u64 {
        self.buddy.floor_pages * PAGE_SIZE
    }

    /// The kernel reserve in bytes (see the module doc for the formula).
    pub fn reserve_bytes(&self) -> u64 {
        self.buddy.reserve_pages() * PAGE_SIZE
    }

    /// Free Normal memory an allocation of `class` leaves, in bytes.
    pub fn watermark_bytes(&self, class: AllocClass) -> u64 {
        self.buddy.keep_pages(class) * PAGE_SIZE
    }

    /// Allocatable free Normal memory of all nodes, in bytes.
    pub fn normal_free_bytes(&self) -> u64 {
        self.buddy.normal_allocatable() * PAGE_SIZE
    }

    /// The memory state, for the message of a failed allocation.
    pub fn pressure(&self) -> Pressure {
        let mut zones = ArrayVec::new();
        for (node, n) in self.buddy.seen_nodes() {
            for zone in ZoneType::ALL {
                let z = &n.zones[zone.index()];
                let largest_order = (0..NR_ORDERS).rev().find(|&o| {
                    [MigrateType::Unmovable, MigrateType::Movable]
                        .iter()
                        .any(|mt| z.lists[o][mt.index()].len > 0)
                });
                let _ = zones.try_push(ZonePressure {
                    node,
                    zone,
                    free_pages: allocatable(z),
                    largest_order: largest_order.map(|o| o as u32),
                });
            }
        }
        Pressure {
            zones,
            reserve_pages: self.buddy.reserve_pages(),
            floor_pages: self.buddy.floor_pages,
        }
    }
}
