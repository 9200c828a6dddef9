//! Units of the memory model: page frame numbers, section numbers, node ids, half-open
//! ranges of pages, and the size constants everything else is built from. Physical
//! addresses are the kernel-wide [`PhysAddr`] of `hotmem_arch::addr`, re-exported here;
//! [`Pfn::down`] and [`Pfn::up`] turn one into a page frame number.
//!
//! Model: physical memory is cut into 4 KiB pages (a [`Pfn`] names one), pages into
//! 2 MiB subsections (also the pageblock, the unit of migrate types and of onlining),
//! subsections into 128 MiB sections (a [`SectionNr`] names one; a section owns one
//! mem_map). The buddy allocator hands out blocks of `2^order` pages, `order <= MAX_ORDER`.
//!
//! Invariants (checked by `const` asserts below, so a bad edit does not build):
//! - a max-order block never spans two sections (a section is the unit of mem_map, so a
//!   block's buddy is always found in the same mem_map);
//! - a pageblock divides a section exactly, and a section has exactly 64 subsections
//!   (one `u64` bitmap per section);
//! - a max-order block is a whole number of pageblocks.
//!
//! Ranges are half-open: `start..end_exclusive`. These are plain values; no locks.
#![forbid(unsafe_code)]

use core::fmt;

/// log2 of the page size.
pub const PAGE_SHIFT: u32 = 12;
/// Bytes per page.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// log2 of the section size (128 MiB).
pub const SECTION_SHIFT: u32 = 27;
/// Bytes per section.
pub const SECTION_SIZE: u64 = 1 << SECTION_SHIFT;
/// Pages per section.
pub const PAGES_PER_SECTION: u64 = 1 << (SECTION_SHIFT - PAGE_SHIFT);
/// log2 of the subsection size (2 MiB); also the pageblock size.
pub const SUBSECTION_SHIFT: u32 = 21;
/// Bytes per subsection.
pub const SUBSECTION_SIZE: u64 = 1 << SUBSECTION_SHIFT;
/// Pages per subsection.
pub const PAGES_PER_SUBSECTION: u64 = 1 << (SUBSECTION_SHIFT - PAGE_SHIFT);
/// Subsections per section: one bit each in a `u64`.
pub const SUBSECTIONS_PER_SECTION: u64 = 1 << (SECTION_SHIFT - SUBSECTION_SHIFT);
/// A pageblock is a subsection: `2^PAGEBLOCK_ORDER` pages.
pub const PAGEBLOCK_ORDER: u32 = SUBSECTION_SHIFT - PAGE_SHIFT;
/// Pages per pageblock.
pub const PAGES_PER_PAGEBLOCK: u64 = 1 << PAGEBLOCK_ORDER;
/// Largest buddy order: blocks of `2^10` pages = 4 MiB.
pub const MAX_ORDER: u32 = 10;
/// Number of buddy orders (`0..=MAX_ORDER`).
pub const NR_ORDERS: usize = MAX_ORDER as usize + 1;
/// Smallest physical address width accepted (1 GiB of address space).
pub const MIN_PA_BITS: u32 = 30;
/// Largest physical address width accepted (aarch64 with LPA/LPA2).
pub const MAX_PA_BITS: u32 = 52;
/// Most NUMA nodes.
pub const MAX_NODES: usize = 16;

const _: () = assert!(
    MAX_ORDER + PAGE_SHIFT <= SECTION_SHIFT,
    "max-order block exceeds a section"
);
const _: () = assert!(
    SECTION_SHIFT >= SUBSECTION_SHIFT,
    "subsection larger than a section"
);
const _: () = assert!(
    SUBSECTIONS_PER_SECTION == 64,
    "subsection bitmap is one u64"
);
const _: () = assert!(
    MAX_ORDER >= PAGEBLOCK_ORDER,
    "max-order block smaller than a pageblock"
);
const _: () = assert!(MAX_NODES <= 64, "node id is stored in 6 bits of a page");

pub use hotmem_arch::addr::PhysAddr;

/// A page frame number: physical address >> `PAGE_SHIFT`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pfn(pub u64);

/// A section number: physical address >> `SECTION_SHIFT`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SectionNr(pub u64);

/// A NUMA node id, always `< MAX_NODES`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(u8);

impl NodeId {
    /// Node 0.
    pub const ZERO: NodeId = NodeId(0);

    /// `Some` when `id < MAX_NODES`.
    pub const fn new(id: u32) -> Option<NodeId> {
        if (id as usize) < MAX_NODES {
            Some(NodeId(id as u8))
        } else {
            None
        }
    }

    /// The id as an index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl Pfn {
    /// The page containing `pa`.
    pub const fn down(pa: PhysAddr) -> Pfn {
        Pfn(pa.0 >> PAGE_SHIFT)
    }
    /// The first page starting at or above `pa`.
    pub const fn up(pa: PhysAddr) -> Pfn {
        Pfn(pa.0.div_ceil(PAGE_SIZE))
    }
    /// First byte of the page.
    pub const fn addr(self) -> PhysAddr {
        PhysAddr(self.0 << PAGE_SHIFT)
    }
    /// The section holding this page.
    pub const fn section(self) -> SectionNr {
        SectionNr(self.0 >> (SECTION_SHIFT - PAGE_SHIFT))
    }
    /// Index of the page inside its section's mem_map.
    pub const fn index_in_section(self) -> usize {
        (self.0 & (PAGES_PER_SECTION - 1)) as usize
    }
    /// Index of the subsection (= pageblock) inside its section, `0..64`.
    pub const fn subsection_in_section(self) -> u32 {
        ((self.0 & (PAGES_PER_SECTION - 1)) >> PAGEBLOCK_ORDER) as u32
    }
    /// `self + nr_pages`.
    pub const fn add(self, nr_pages: u64) -> Pfn {
        Pfn(self.0 + nr_pages)
    }
    /// Whether the pfn is a multiple of `nr_pages` (a power of two).
    pub const fn is_aligned(self, nr_pages: u64) -> bool {
        self.0 & (nr_pages - 1) == 0
    }
}

impl SectionNr {
    /// First page of the section.
    pub const fn start_pfn(self) -> Pfn {
        Pfn(self.0 << (SECTION_SHIFT - PAGE_SHIFT))
    }
    /// First byte of the section.
    pub const fn start_addr(self) -> PhysAddr {
        PhysAddr(self.0 << SECTION_SHIFT)
    }
}

/// A half-open range of pages `start..end_exclusive`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PfnRange {
    pub start: Pfn,
    pub end_exclusive: Pfn,
}

impl PfnRange {
    /// `start..end_exclusive`.
    pub const fn new(start: Pfn, end_exclusive: Pfn) -> PfnRange {
        PfnRange {
            start,
            end_exclusive,
        }
    }
    /// The pages of the byte range `base..base+size_bytes`, or `None` unless both ends are
    /// page aligned and the end does not overflow.
    pub fn from_phys(base: PhysAddr, size_bytes: u64) -> Option<PfnRange> {
        let end = base.0.checked_add(size_bytes)?;
        if base.0 % PAGE_SIZE != 0 || end % PAGE_SIZE != 0 {
            return None;
        }
        Some(PfnRange::new(Pfn::down(base), Pfn::down(PhysAddr(end))))
    }
    /// Number of pages.
    pub const fn nr_pages(self) -> u64 {
        self.end_exclusive.0.saturating_sub(self.start.0)
    }
    /// Whether the range holds no page.
    pub const fn is_empty(self) -> bool {
        self.end_exclusive.0 <= self.start.0
    }
    /// Whether both ends are multiples of `nr_pages` (a power of two).
    pub const fn is_aligned(self, nr_pages: u64) -> bool {
        self.start.is_aligned(nr_pages) && self.end_exclusive.is_aligned(nr_pages)
    }
    /// Whether `pfn` lies inside.
    pub const fn contains(self, pfn: Pfn) -> bool {
        self.start.0 <= pfn.0 && pfn.0 < self.end_exclusive.0
    }
    /// The sections this range touches, as a half-open range of section numbers.
    pub const fn sections(self) -> (SectionNr, SectionNr) {
        let first = self.start.section();
        let last = Pfn(self.end_exclusive.0 + PAGES_PER_SECTION - 1).section();
        (first, last)
    }
    /// The part of `self` inside `other` (possibly empty).
    pub fn intersect(self, other: PfnRange) -> PfnRange {
        let start = Pfn(self.start.0.max(other.start.0));
        let end = Pfn(self.end_exclusive.0.min(other.end_exclusive.0));
        PfnRange::new(start, Pfn(end.0.max(start.0)))
    }
}

hotmem_arch::fmt_newtype! {
    Pfn: debug "Pfn({:#x})", display "pfn {:#x}";
    SectionNr: debug "SectionNr({})", display "{}";
    NodeId: debug "NodeId({})", display "{}";
}
impl fmt::Debug for PfnRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pfn[{:#x}..{:#x})", self.start.0, self.end_exclusive.0)
    }
}
impl fmt::Display for PfnRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:#x}..{:#x})",
            self.start.addr().0,
            self.end_exclusive.addr().0
        )
    }
}
