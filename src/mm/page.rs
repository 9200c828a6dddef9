//! The page descriptor ([`Page`], one per 4 KiB page, stored in its section's mem_map),
//! zone kinds and pageblock migrate types.
//!
//! Model: all allocator state lives in the descriptors, never in the pages themselves, so
//! the allocator works on memory it may not even be allowed to touch (unplugged, not yet
//! mapped). A page is in exactly one of these states, told apart by its flags:
//!
//! | state     | flags                 | meaning                                               |
//! |-----------|-----------------------|-------------------------------------------------------|
//! | hole      | `HOLE`                | not RAM: a missing subsection or a boot-time gap      |
//! | offline   | `OFFLINE`             | present (plugged, has a descriptor) but in no zone    |
//! | reserved  | `RESERVED`            | online but never managed (kernel image, DTB, boot mem_map) |
//! | free head | `BUDDY`, `order`      | first page of a free block on a free list             |
//! | free tail | none                  | covered by a free block whose head is below it        |
//! | allocated | none, `refcount > 0` on the head | handed out by the buddy allocator          |
//! | migrating | `MIGRATING`, `refcount > 0` | allocated, frozen while [`super::migrate`] copies it |
//!
//! `MEMMAP` marks pages holding mem_maps or section-table chunks (with `RESERVED` at boot,
//! allocated from the buddy at run time).
//!
//! Encoding (32 bytes): the two free-list links are pfns in the low 40 bits of `next` and
//! `prev` (enough for a 52-bit physical address); the upper 24 bits of each carry the
//! page's own section number, so [`Page`] -> pfn needs no search. `info` packs flags,
//! buddy order, zone and node. The node is the page's own: a section may hold memory of
//! two nodes, and every count and free list goes by the page's node, never the section's.
//! Hole descriptors carry the section's (mem_map's) node. `owner` is an opaque word for
//! the kernel ([`crate::mm::Mm::set_owner`]); migration carries it to the new page. The
//! reverse map itself is kept outside the descriptors ([`super::rmap`]).
//!
//! `refcount` of an allocated head counts every reference (see [`super::refs`]): the
//! allocation's own (1 from `alloc_pages`), one per page-table mapping of a movable page,
//! and one per extra holder (a pin, e.g. in-flight DMA).
//!
//! Locks: descriptors are only touched through `Mm`, which the kernel keeps behind one
//! IRQ-masking spin lock.
#![forbid(unsafe_code)]

use core::fmt;

use super::types::{NodeId, Pfn, SectionNr, MAX_ORDER};

/// Zones of a node.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub enum ZoneType {
    /// Boot memory; kernel (unmovable) allocations and movable ones as a fallback.
    Normal = 0,
    /// Filled by hotplug; movable allocations only, so it can be emptied and unplugged.
    Movable = 1,
}

impl ZoneType {
    /// Both zones, in index order.
    pub const ALL: [ZoneType; 2] = [ZoneType::Normal, ZoneType::Movable];
    /// Number of zones per node.
    pub const COUNT: usize = 2;

    /// Name as printed by the shell.
    pub const fn name(self) -> &'static str {
        match self {
            ZoneType::Normal => "Normal",
            ZoneType::Movable => "Movable",
        }
    }
    /// Index into per-zone arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
    /// The migrate type a pageblock gets when it is onlined into this zone.
    pub const fn default_migrate_type(self) -> MigrateType {
        match self {
            ZoneType::Normal => MigrateType::Unmovable,
            ZoneType::Movable => MigrateType::Movable,
        }
    }
    pub(crate) const fn from_bits(bits: u32) -> ZoneType {
        if bits & 1 == 0 {
            ZoneType::Normal
        } else {
            ZoneType::Movable
        }
    }
}

display_by_name!(ZoneType);

/// Migrate type of a 2 MiB pageblock. Free blocks sit on the free list of their
/// pageblock's type; `Isolate` lists are never allocated from.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub enum MigrateType {
    Unmovable = 0,
    Movable = 1,
    Isolate = 2,
}

impl MigrateType {
    /// All types, in index order.
    pub const ALL: [MigrateType; 3] = [
        MigrateType::Unmovable,
        MigrateType::Movable,
        MigrateType::Isolate,
    ];
    /// Number of migrate types.
    pub const COUNT: usize = 3;

    /// Index into per-type arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            MigrateType::Unmovable => "unmovable",
            MigrateType::Movable => "movable",
            MigrateType::Isolate => "isolate",
        }
    }
}

display_by_name!(MigrateType);

/// Page flag bits (see the state table in the module doc).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct PageFlags(u8);

impl PageFlags {
    /// Head of a free block on a free list.
    pub const BUDDY: PageFlags = PageFlags(1 << 0);
    /// Online but never given to the buddy allocator.
    pub const RESERVED: PageFlags = PageFlags(1 << 1);
    /// Present but not online.
    pub const OFFLINE: PageFlags = PageFlags(1 << 2);
    /// Not RAM.
    pub const HOLE: PageFlags = PageFlags(1 << 3);
    /// Holds a mem_map or a section-table chunk.
    pub const MEMMAP: PageFlags = PageFlags(1 << 4);
    /// Scratch mark used while re-freeing the blocks of a pageblock; never seen outside a call.
    pub(crate) const PENDING: PageFlags = PageFlags(1 << 5);
    /// An allocated movable head frozen for migration ([`super::migrate`]): every mapping
    /// is a migration entry, new references are refused and the page can't be freed.
    pub const MIGRATING: PageFlags = PageFlags(1 << 6);

    /// No flag.
    pub const fn empty() -> PageFlags {
        PageFlags(0)
    }
    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: PageFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether any bit of `other` is set.
    pub const fn intersects(self, other: PageFlags) -> bool {
        self.0 & other.0 != 0
    }
    /// Union.
    pub const fn union(self, other: PageFlags) -> PageFlags {
        PageFlags(self.0 | other.0)
    }
    /// Raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }
}

impl core::ops::BitOr for PageFlags {
    type Output = PageFlags;
    fn bitor(self, rhs: PageFlags) -> PageFlags {
        self.union(rhs)
    }
}

impl fmt::Debug for PageFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 7] = [
            "buddy",
            "reserved",
            "offline",
            "hole",
            "memmap",
            "pending",
            "migrating",
        ];
        let mut first = true;
        for (bit, name) in NAMES.iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// Bits of a pfn link; the value with all these bits set means "no link".
const LINK_BITS: u32 = 40;
const LINK_MASK: u64 = (1 << LINK_BITS) - 1;
const NIL: u64 = LINK_MASK;
/// Section-number bits stored in the top of each link word.
const SEC_BITS_PER_WORD: u32 = 64 - LINK_BITS;

const INFO_FLAGS_SHIFT: u32 = 0;
const INFO_ORDER_SHIFT: u32 = 8;
const INFO_ZONE_SHIFT: u32 = 12;
const INFO_NODE_SHIFT: u32 = 13;

const _: () = assert!(
    super::types::MAX_PA_BITS - super::types::PAGE_SHIFT <= LINK_BITS,
    "pfn links too narrow for the largest physical address"
);
const _: () = assert!(
    super::types::MAX_PA_BITS - super::types::SECTION_SHIFT <= 2 * SEC_BITS_PER_WORD,
    "section number does not fit the link words"
);
const _: () = assert!(MAX_ORDER < 16, "order is stored in 4 bits");

/// One page descriptor. See the module doc for the states and the encoding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Page {
    next: u64,
    prev: u64,
    owner: u64,
    refcount: u32,
    info: u32,
}

const _: () = assert!(core::mem::size_of::<Page>() <= 64, "Page exceeds 64 bytes");
const _: () = assert!(
    core::mem::size_of::<Page>() == 32,
    "Page layout changed: update docs"
);

impl Page {
    /// A hole page of section 0 with no links; what a fresh mem_map holds before the
    /// model initialises it.
    pub const EMPTY: Page = Page {
        next: NIL,
        prev: NIL,
        owner: 0,
        refcount: 0,
        info: (PageFlags::HOLE.0 as u32) << INFO_FLAGS_SHIFT,
    };

    /// A descriptor for a page of section `section`, node `node`, with `flags`.
    pub(crate) fn init(section: SectionNr, node: NodeId, flags: PageFlags) -> Page {
        let lo = section.0 & ((1 << SEC_BITS_PER_WORD) - 1);
        let hi = section.0 >> SEC_BITS_PER_WORD;
        Page {
            next: NIL | (lo << LINK_BITS),
            prev: NIL | (hi << LINK_BITS),
            owner: 0,
            refcount: 0,
            info: ((flags.0 as u32) << INFO_FLAGS_SHIFT)
                | ((node.index() as u32) << INFO_NODE_SHIFT),
        }
    }

    /// The section whose mem_map holds this descriptor.
    pub fn section(&self) -> SectionNr {
        SectionNr((self.next >> LINK_BITS) | ((self.prev >> LINK_BITS) << SEC_BITS_PER_WORD))
    }
    /// Flags.
    pub fn flags(&self) -> PageFlags {
        PageFlags((self.info >> INFO_FLAGS_SHIFT) as u8)
    }
    pub(crate) fn set_flags(&mut self, flags: PageFlags) {
        self.info =
            (self.info & !(0xff << INFO_FLAGS_SHIFT)) | ((flags.0 as u32) << INFO_FLAGS_SHIFT);
    }
    pub(crate) fn insert_flags(&mut self, flags: PageFlags) {
        self.set_flags(self.flags().union(flags));
    }
    pub(crate) fn remove_flags(&mut self, flags: PageFlags) {
        self.set_flags(PageFlags(self.flags().0 & !flags.0));
    }
    /// Whether this is the head of a free block.
    pub fn is_buddy(&self) -> bool {
        self.flags().contains(PageFlags::BUDDY)
    }
    /// Buddy order: of the free block for a free head, of the allocation for an allocated head.
    pub fn order(&self) -> u32 {
        (self.info >> INFO_ORDER_SHIFT) & 0xf
    }
    pub(crate) fn set_order(&mut self, order: u32) {
        self.info = (self.info & !(0xf << INFO_ORDER_SHIFT)) | ((order & 0xf) << INFO_ORDER_SHIFT);
    }
    /// Zone (meaningful only while online).
    pub fn zone(&self) -> ZoneType {
        ZoneType::from_bits(self.info >> INFO_ZONE_SHIFT)
    }
    pub(crate) fn set_zone(&mut self, zone: ZoneType) {
        self.info = (self.info & !(1 << INFO_ZONE_SHIFT)) | ((zone as u32) << INFO_ZONE_SHIFT);
    }
    /// Node of this page's memory. It may differ from the node of the section (whose
    /// mem_map holds the descriptor) when a node boundary falls inside the section.
    pub fn node(&self) -> NodeId {
        NodeId::new((self.info >> INFO_NODE_SHIFT) & 0x3f).unwrap_or(NodeId::ZERO)
    }
    pub(crate) fn set_node(&mut self, node: NodeId) {
        self.info =
            (self.info & !(0x3f << INFO_NODE_SHIFT)) | ((node.index() as u32) << INFO_NODE_SHIFT);
    }
    /// Reference count (1 for a freshly allocated head).
    pub fn refcount(&self) -> u32 {
        self.refcount
    }
    pub(crate) fn set_refcount(&mut self, count: u32) {
        self.refcount = count;
    }
    /// Opaque reverse-map link for movable pages (0 = none). The model never interprets it.
    pub fn owner(&self) -> u64 {
        self.owner
    }
    pub(crate) fn set_owner(&mut self, owner: u64) {
        self.owner = owner;
    }
    pub(crate) fn next(&self) -> Option<Pfn> {
        link_get(self.next)
    }
    pub(crate) fn prev(&self) -> Option<Pfn> {
        link_get(self.prev)
    }
    pub(crate) fn set_next(&mut self, pfn: Option<Pfn>) {
        self.next = link_set(self.next, pfn);
    }
    pub(crate) fn set_prev(&mut self, pfn: Option<Pfn>) {
        self.prev = link_set(self.prev, pfn);
    }
}

fn link_get(word: u64) -> Option<Pfn> {
    let link = word & LINK_MASK;
    if link == NIL {
        None
    } else {
        Some(Pfn(link))
    }
}

fn link_set(word: u64, pfn: Option<Pfn>) -> u64 {
    let link = pfn.map_or(NIL, |p| p.0 & LINK_MASK);
    (word & !LINK_MASK) | link
}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("flags", &self.flags())
            .field("order", &self.order())
            .field("zone", &self.zone())
            .field("node", &self.node())
            .field("refcount", &self.refcount)
            .field("next", &self.next())
            .field("prev", &self.prev())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips() {
        let sec = SectionNr((1 << 25) - 3);
        let mut p = Page::init(sec, NodeId::new(13).unwrap(), PageFlags::OFFLINE);
        p.set_next(Some(Pfn((1 << 40) - 2)));
        p.set_prev(Some(Pfn(7)));
        p.set_order(10);
        p.set_zone(ZoneType::Movable);
        assert_eq!(p.section(), sec);
        assert_eq!(p.next(), Some(Pfn((1 << 40) - 2)));
        assert_eq!(p.prev(), Some(Pfn(7)));
        assert_eq!(p.order(), 10);
        assert_eq!(p.zone(), ZoneType::Movable);
        assert_eq!(p.node(), NodeId::new(13).unwrap());
        p.set_node(NodeId::new(2).unwrap());
        assert_eq!(p.node(), NodeId::new(2).unwrap());
        assert_eq!((p.zone(), p.order()), (ZoneType::Movable, 10));
        p.set_node(NodeId::new(13).unwrap());
        assert_eq!(p.flags(), PageFlags::OFFLINE);
        p.set_next(None);
        assert_eq!(p.next(), None);
        assert_eq!(p.section(), sec);
        p.insert_flags(PageFlags::BUDDY);
        p.remove_flags(PageFlags::OFFLINE);
        assert_eq!(p.flags(), PageFlags::BUDDY);
        assert_eq!(p.order(), 10);
    }
}
