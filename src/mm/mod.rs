//! The memory model: sparse sections with per-section mem_maps, zones per node, a buddy
//! allocator, the run-time section operations hotplug needs, an invariant checker, and
//! the pure logic of the kernel heap. Everything here is plain safe Rust over pfn ranges
//! and runs under host `cargo test`; the kernel supplies memory through one trait,
//! [`MemMapStore`], which maps handles only the model makes ([`MetaPages`]).
//!
//! # Model
//! Physical memory is a sparse set of 128 MiB sections ([`section`]), each split into 64
//! subsections of 2 MiB; a subsection is the unit of presence and onlining and is also a
//! pageblock (the unit of migrate types). A present section owns a mem_map: one 32-byte
//! [`Page`] per 4 KiB page, stored in physical memory the model allocates itself; or, with
//! memmap on memory, each 2 MiB unit of a hot-plugged section carries its own 512
//! descriptors in its first 16 KiB ([`memmap`]: the layout, and why per unit). All
//! allocator state lives in those descriptors ([`page`], [`buddy`]).
//!
//! NUMA: every page descriptor carries its own node, and zones (counts, free lists) are
//! per node and go by the page's node. A section has one node too, the node of its
//! mem_map, but may hold pages of other nodes: node boundaries may fall anywhere, even
//! inside a pageblock (details in [`model`]).
//!
//! # States of a subsection and the calls that move between them
//! ```text
//!            add_sections            online_range          isolate_range
//!   absent ───────────────▶ offline ─────────────▶ online ──────────────▶ isolated
//!          ◀─────────────── (present)◀───────────── (zone) ◀────────────── (online,
//!           remove_sections          offline_range        unisolate_range   Isolate)
//! ```
//! - `add_sections(range, node)`: absent -> offline. Allocates the mem_map of each section
//!   the range starts using (1 MiB, unmovable, from `node` first) and section-table chunks.
//!   One node per call; the range may go into a section that already holds another
//!   node's memory (the pages get `node`, the section keeps its mem_map and node).
//! - `online_range(range, zone)`: offline -> online; the pages go to the buddy allocator
//!   of `zone` on each page's node. A section never mixes zones (it may mix nodes).
//! - `isolate_range` / `unisolate_range`: online <-> isolated; isolated free pages can't
//!   be allocated, and pages freed there stay isolated.
//! - `offline_range`: isolated -> offline, only if every page in the range is free.
//! - `remove_sections`: offline -> absent; the last subsection of a run-time section frees
//!   its mem_map, a unit with its own descriptors releases them, and an empty run-time
//!   table chunk goes too. Boot sections and chunks keep theirs.
//!
//! Ranges of the run-time calls are pfn ranges aligned to 2 MiB; they need not be
//! section aligned. A call checks the whole range first and either does all of it or
//! returns an [`Error`] and changes nothing (except `add_sections`, which may keep a
//! section-table chunk it allocated). Each call is O(pages in the range); [`chunked`] runs
//! the same calls one chunk (16 MiB) per hold of the kernel's lock, which is how the
//! kernel's hotplug makes them.
//!
//! # Invariants (checked by [`Mm::check`])
//! Every free block is on exactly one free list, the one of its node, zone, order and
//! pageblock migrate type; a free block never spans two nodes or zones; counts match the
//! lists and per-node counts match the nodes of the pages; free pages lie only in online subsections;
//! nothing allocatable sits in an isolated pageblock; section bitmaps are consistent
//! (`online ⊆ present`, a section with present memory has a mem_map, a section with online
//! memory has exactly one zone).
//!
//! # Movable pages: references, reverse map, migration
//! An allocated page has a reference count ([`refs`]: `get_page` / `put_page`, pinned =
//! more references than its mappings plus the allocation's own); movable pages mapped into
//! address spaces are listed in the reverse map ([`rmap`], a separate object); the
//! migration engine ([`migrate`]) empties an isolated range by moving its movable pages.
//!
//! # Free memory under pressure
//! Every allocation has a class ([`AllocClass`]): the kernel's own memory may take every
//! free page; a transient workload (`memtest`) leaves the kernel reserve of free Normal
//! memory alone; workloads and migration destinations leave the reserve and the floor
//! ([`reserve`]: the formula, and why). They get a clean [`AllocError::NoMemory`] instead,
//! so the kernel's next allocation always finds a page.
//!
//! # Locks
//! `Mm` is plain `&mut self` logic. The kernel keeps the one `Mm` behind one spin lock that
//! masks interrupts; that lock guards everything here: the section table, every mem_map
//! and page descriptor, the free lists and counts. Holds stay short whatever the size of
//! memory: the calls that take the lock several times reach it through [`MmLock`] (one
//! hold per step) and bound each step: [`chunked`] one chunk of a hotplug range,
//! [`migrate`] one page of a batch or a bounded scan. Only the checker walks everything
//! under one hold (a diagnostic). The kernel heap has its own lock and
//! may call into `Mm` (heap -> Mm); `Mm` never allocates from the heap after boot (its
//! run-time metadata comes from its own page allocator), so the order never reverses.
//! The reverse map is not part of `Mm`: it lives on the heap behind its own lock, taken
//! before the others when nested: rmap -> (page tables) -> heap -> Mm. Nothing that
//! holds the `Mm` lock takes the rmap lock.
#![forbid(unsafe_code)]

/// `Display` for the model's enums that have a `const fn name(self) -> &'static str`: the
/// name. Defined before the modules so that each can use it.
macro_rules! display_by_name {
    ($($ty:ty),* $(,)?) => {$(
        impl core::fmt::Display for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.name())
            }
        }
    )*};
}

pub mod buddy;
pub mod check;
pub mod chunked;
pub mod early;
#[cfg(all(any(test, feature = "testing"), not(target_os = "none")))]
pub mod faults;
pub mod heap;
pub mod hotplug;
pub mod memmap;
pub mod migrate;
pub mod model;
pub mod page;
pub mod refs;
pub mod reserve;
pub mod rmap;
pub mod section;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod types;

#[cfg(test)]
mod tests;

use core::fmt;

pub use check::CheckError;
pub use migrate::{
    migrate_range, MigrateFailure, MigrateReport, PageTables, Pte, RmapLock, HOLD_PAGES,
    MIGRATE_BATCH,
};
pub use model::{
    MemRegion, Mm, MmLock, NodeStats, Reservation, SectionInfo, SectionState, ZoneStats,
};
pub use page::{MigrateType, Page, PageFlags, ZoneType};
pub use reserve::{kernel_reserve_bytes, Pressure, ZonePressure};
pub use rmap::{AsId, Mapping, Rmap};
pub use section::{Section, MEM_MAP_BYTES};
pub use store::{MemMap, MemMapItem, MemMapStore, MetaPages};
pub use types::*;

/// Bytes of mem_map per 4 KiB page.
pub const MEM_MAP_BYTES_PER_PAGE: usize = core::mem::size_of::<Page>();

/// Why a memory-model call was refused. The state is unchanged when this is returned.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Error {
    /// `pa_bits` outside `MIN_PA_BITS..=MAX_PA_BITS`.
    BadPaBits(u32),
    /// An empty range, or one whose end overflows.
    InvalidRange,
    /// A range not aligned to the unit the call works in (2 MiB for run-time calls).
    Unaligned,
    /// A range beyond the CPU's physical address range.
    BeyondPhysLimit,
    /// Boot memory regions overlap.
    Overlap,
    /// No usable memory at boot.
    NoBootMemory,
    /// Part of the range is not present.
    NotPresent(Pfn),
    /// Part of the range is already present.
    AlreadyPresent(Pfn),
    /// Part of the range is not online.
    NotOnline(Pfn),
    /// Part of the range is already online (or still online, for `remove_sections`).
    AlreadyOnline(Pfn),
    /// Onlining would mix two zones in one section.
    ZoneConflict(SectionNr),
    /// Adding another node's memory to a section whose units carry their own descriptors
    /// (such a section holds one node).
    NodeConflict(SectionNr),
    /// Part of the range is not isolated.
    NotIsolated(Pfn),
    /// Part of the range is already isolated.
    AlreadyIsolated(Pfn),
    /// A page in the range is in use (not free).
    Busy(Pfn),
    /// No memory for a mem_map or section-table chunk.
    NoMemory,
    /// `free_pages` of something that is not an allocation of that order.
    BadFree(Pfn),
    /// A reference call (`get_page`, `put_page`, ...) on a page that is not the head of
    /// an allocation.
    NotAllocated(Pfn),
    /// `get_page` on a page frozen for migration: look it up again through its mapping
    /// (which waits for the migration) and retry.
    Migrating(Pfn),
    /// The reference count would overflow.
    RefOverflow(Pfn),
    /// A reverse-map call with a virtual address that is not page aligned.
    BadAddress(u64),
    /// `Rmap::add` of a mapping it already has, or `Rmap::move_page` onto a mapped page.
    AlreadyMapped(Pfn),
    /// `Rmap::remove` / `Rmap::move_page` of a mapping or page it does not have.
    NotMapped(Pfn),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadPaBits(b) => write!(f, "physical address width {b} not supported"),
            Error::InvalidRange => f.write_str("empty or overflowing range"),
            Error::Unaligned => f.write_str("range not aligned to 2 MiB"),
            Error::BeyondPhysLimit => f.write_str("range beyond the physical address limit"),
            Error::Overlap => f.write_str("memory regions overlap"),
            Error::NoBootMemory => f.write_str("no usable boot memory"),
            Error::NotPresent(p) => write!(f, "{p} not present"),
            Error::AlreadyPresent(p) => write!(f, "{p} already present"),
            Error::NotOnline(p) => write!(f, "{p} not online"),
            Error::AlreadyOnline(p) => write!(f, "{p} is online"),
            Error::ZoneConflict(s) => write!(f, "section {s} would mix zones"),
            Error::NodeConflict(s) => write!(f, "section {s} holds another node's units"),
            Error::NotIsolated(p) => write!(f, "{p} not isolated"),
            Error::AlreadyIsolated(p) => write!(f, "{p} already isolated"),
            Error::Busy(p) => write!(f, "{p} in use"),
            Error::NoMemory => f.write_str("out of memory for mem_map"),
            Error::BadFree(p) => write!(f, "bad free of {p}"),
            Error::NotAllocated(p) => write!(f, "{p} is not an allocated page"),
            Error::Migrating(p) => write!(f, "{p} is being migrated"),
            Error::RefOverflow(p) => write!(f, "{p}: reference count overflow"),
            Error::BadAddress(va) => write!(f, "virtual address {va:#x} not page aligned"),
            Error::AlreadyMapped(p) => write!(f, "{p} already has that mapping"),
            Error::NotMapped(p) => write!(f, "{p} has no such mapping"),
        }
    }
}

/// Why an allocation failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AllocError {
    /// `order > MAX_ORDER`.
    BadOrder,
    /// No free block large enough in any allowed zone.
    NoMemory,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::BadOrder => f.write_str("order too large"),
            AllocError::NoMemory => f.write_str("out of memory"),
        }
    }
}

/// Who an allocation is for, which decides how much of free Normal memory it must leave
/// (the watermarks of [`reserve`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum AllocClass {
    /// The kernel's own memory (heap, kernel page tables, mem_maps, DMA buffers, stacks of
    /// kernel tasks): may take every free page, the kernel reserve included.
    #[default]
    Kernel,
    /// A short-lived workload that gives everything back before its command returns
    /// (`memtest`): may take the floor, never the kernel reserve.
    Transient,
    /// Workloads (hog pages, their tasks' stacks and page tables, `spin`) and migration
    /// destinations: never take the kernel reserve or the floor.
    Workload,
}

/// What an allocation may use.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct AllocFlags {
    /// Movable data (reached only through page tables): prefers the Movable zone, may
    /// fall back to Normal. Unmovable data never lands in Movable.
    pub movable: bool,
    /// Node to try first (node 0 when `None`); other nodes follow in ascending order.
    pub node: Option<NodeId>,
    /// Whose memory it is: how much free Normal memory it must leave ([`reserve`]).
    pub class: AllocClass,
}

impl AllocFlags {
    /// Unmovable kernel memory, any node.
    pub const UNMOVABLE: AllocFlags = AllocFlags {
        movable: false,
        node: None,
        class: AllocClass::Kernel,
    };
    /// Movable workload memory (also what migration moves pages to), any node.
    pub const MOVABLE: AllocFlags = AllocFlags {
        movable: true,
        node: None,
        class: AllocClass::Workload,
    };
    /// Unmovable memory a workload needs (its task stacks, page tables, private pages),
    /// any node: Normal only, above the reserve and the floor.
    pub const WORKLOAD: AllocFlags = AllocFlags {
        movable: false,
        node: None,
        class: AllocClass::Workload,
    };

    /// The same flags, preferring `node`.
    pub const fn on_node(self, node: NodeId) -> AllocFlags {
        AllocFlags {
            movable: self.movable,
            node: Some(node),
            class: self.class,
        }
    }

    /// The same flags for a short-lived workload ([`AllocClass::Transient`]).
    pub const fn transient(self) -> AllocFlags {
        AllocFlags {
            movable: self.movable,
            node: self.node,
            class: AllocClass::Transient,
        }
    }
}
